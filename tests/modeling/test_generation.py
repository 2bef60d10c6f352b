"""Generation backends (plain Python, no Django): tiny local model, real HTTP endpoint."""

from dataclasses import replace

import pytest
import torch

from modeling.ml.generation import (
    EndpointBackend,
    GenerationError,
    LocalBackend,
    ModelSpec,
    SamplingParams,
    backend_for,
)
from modeling.ml.reward import RewardScorer
from tests.modeling.chat_server import ChatServer

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hello"},
    {"role": "assistant", "content": "yes"},
    {"role": "user", "content": "reverse the list"},
]


def test_the_chat_template_renders_system_and_earlier_turns(tiny_model_dir, tmp_path):
    backend = LocalBackend(ModelSpec(kind="local", model_path=str(tiny_model_dir)), tmp_path)
    text = backend.prompt_text(CONVERSATION)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n"
        "<|im_start|>assistant\nyes<|im_end|>\n<|im_start|>user\nreverse the list<|im_end|>\n<|im_start|>assistant\n"
    )


def test_a_batch_is_left_padded_and_matches_one_at_a_time_greedy_output(tiny_model_dir, tmp_path):
    backend = LocalBackend(ModelSpec(kind="local", model_path=str(tiny_model_dir)), tmp_path)
    assert backend.tokenizer.padding_side == "left"
    short = [{"role": "user", "content": "hello"}]
    params = SamplingParams(max_new_tokens=6, temperature=0)
    batched = backend.generate([CONVERSATION, short], params)
    alone = backend.generate([short], params) + backend.generate([CONVERSATION], params)
    assert [g.text for g in batched] == [alone[1].text, alone[0].text]
    assert batched[0].prompt_tokens > batched[1].prompt_tokens
    assert all(0 < g.completion_tokens <= 6 and g.finish_reason in {"stop", "length"} for g in batched)


def test_a_local_model_is_loaded_once_per_process(tiny_model_dir, tmp_path):
    spec = ModelSpec(kind="local", model_path=str(tiny_model_dir))
    assert backend_for(spec, tmp_path) is backend_for(spec, tmp_path)


def test_members_that_differ_only_in_name_share_one_loaded_model(tiny_model_dir, tmp_path):
    cold = ModelSpec(kind="local", name="SmolLM2", model_path=str(tiny_model_dir))
    hot = ModelSpec(kind="local", name="SmolLM2 (t=1.0)", model_path=str(tiny_model_dir))
    assert backend_for(cold, tmp_path) is backend_for(hot, tmp_path)


def test_a_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(GenerationError, match="model directory missing"):
        LocalBackend(ModelSpec(kind="local", model_path=str(tmp_path / "nope")), tmp_path)


def test_the_endpoint_client_sends_the_conversation_and_reads_usage():
    with ChatServer(api_key="sk-test") as server:
        backend = EndpointBackend(ModelSpec(kind="endpoint", base_url=server.url, endpoint_model="m", api_key="sk-test"))
        (gen,) = backend.generate([CONVERSATION], SamplingParams(max_new_tokens=20, temperature=0.5, seed=3))
    assert gen.text == "echo (4 messages): reverse the list"
    assert (gen.prompt_tokens, gen.finish_reason) == (11, "stop")
    request = server.requests[0]
    assert request["auth"] == "Bearer sk-test" and request["path"] == "/v1/chat/completions"
    assert request["body"]["messages"] == CONVERSATION
    assert request["body"] | {} == {**request["body"], "model": "m", "max_tokens": 20, "temperature": 0.5, "seed": 3}


def test_the_endpoint_client_keeps_a_batch_in_flight_at_once_and_in_order():
    """vLLM batches the requests it has at once: the server only answers when four requests
    wait together (one at a time, the first would wait alone and the barrier would break)."""
    import threading

    together = threading.Barrier(4, timeout=20)

    def answer(last):
        together.wait()
        return f"answer to {last}"

    asks = [[{"role": "user", "content": f"q{i}"}] for i in range(4)]
    with ChatServer(answer=answer) as server:
        backend = EndpointBackend(ModelSpec(kind="endpoint", base_url=server.url, endpoint_model="m", max_retries=0))
        out = backend.generate(asks, SamplingParams())
    assert [g.text for g in out] == [f"answer to q{i}" for i in range(4)] and len(server.requests) == 4
    # a bad answer fails alone; the rest of the batch still comes back
    with ChatServer(answer=lambda last: b"not json" if last == "q1" else f"ok {last}") as server:
        out = EndpointBackend(ModelSpec(kind="endpoint", base_url=server.url, endpoint_model="m")).generate(asks, SamplingParams())
    assert [g.finish_reason for g in out] == ["stop", "error", "stop", "stop"] and "not JSON" in out[1].error


def test_the_endpoint_client_retries_5xx_then_succeeds():
    with ChatServer(fail_first=2) as server:
        backend = EndpointBackend(ModelSpec(kind="endpoint", base_url=server.url, endpoint_model="m", max_retries=2))
        (gen,) = backend.generate([CONVERSATION], SamplingParams())
    assert gen.text.startswith("echo") and len(server.requests) == 3


def test_the_endpoint_client_does_not_retry_a_401_and_says_why():
    with ChatServer(api_key="right") as server:
        backend = EndpointBackend(ModelSpec(kind="endpoint", base_url=server.url, endpoint_model="m", api_key="wrong", max_retries=3))
        with pytest.raises(GenerationError, match="HTTP 401"):
            backend.generate([CONVERSATION], SamplingParams())
    assert len(server.requests) == 1


def test_an_unreachable_endpoint_is_a_clear_error():
    backend = EndpointBackend(ModelSpec(kind="endpoint", base_url="http://127.0.0.1:9/v1", endpoint_model="m", max_retries=0, timeout_s=2))
    with pytest.raises(GenerationError, match="unreachable"):
        backend.generate([CONVERSATION], SamplingParams())


def test_the_reward_scorer_reads_one_score_per_response_independent_of_batching(tiny_reward_dir):
    scorer = RewardScorer(str(tiny_reward_dir), batch_size=2)
    conversations = [[{"role": "user", "content": "hello"}]] * 5
    # lengths out of order: batched by length, the scores still come back in the callers' order
    responses = ["yes", "no thank you kind user " * 6, "good", "python list hello yes", "no"]
    scores = scorer.score(conversations, responses)
    alone = [scorer.score([c], [r])[0] for c, r in zip(conversations, responses)]
    assert len(scores) == 5 and scores == pytest.approx(alone, abs=1e-4)
    assert len(set(round(s, 5) for s in scores)) == 5


def test_the_reward_scorer_cuts_a_long_conversation_from_the_start_never_the_answer(tiny_reward_dir):
    """Two answers to one conversation longer than max_length: cut from the right, both would be
    cut inside the shared conversation and score the same; the end is what the reward reads."""
    scorer = RewardScorer(str(tiny_reward_dir))
    long_talk = [{"role": "user", "content": " ".join(["hello list python"] * 60)}]
    first, second = scorer.score([long_talk] * 2, ["yes good answer", "no bad"], max_length=32)
    assert first != pytest.approx(second, abs=1e-6)
    text = scorer.text(long_talk, "yes good answer")
    ids = scorer.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert ids.shape[1] > 32
    with torch.inference_mode():  # the score is the model's on the last 32 tokens
        last = float(scorer.model(input_ids=ids[:, -32:]).logits[0, 0])
    assert first == pytest.approx(last, abs=1e-4)


def test_a_round_checkpoint_loads_as_base_plus_lora_adapter(tiny_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    spec = ModelSpec(kind="checkpoint", model_path=str(adapter_dir), base=ModelSpec(kind="local", model_path=str(tiny_model_dir)))
    checkpoint = LocalBackend(spec, tmp_path)
    plain = LocalBackend(ModelSpec(kind="local", model_path=str(tiny_model_dir)), tmp_path)
    batch = plain.tokenizer(["hello"], return_tensors="pt")
    with torch.inference_mode():
        # the adapter (non-zero init) changes the logits: the checkpoint really carries it
        assert not torch.allclose(checkpoint.model(**batch).logits, plain.model(**batch).logits)
    (gen,) = checkpoint.generate([[{"role": "user", "content": "hello"}]], SamplingParams(max_new_tokens=4, temperature=0))
    assert gen.completion_tokens > 0


def test_a_lora_checkpoint_without_its_base_is_a_clear_error(tiny_model_dir, tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(GenerationError, match="no base model"):
        LocalBackend(ModelSpec(kind="checkpoint", model_path=str(tmp_path / "adapter")), tmp_path)


# --- engines and streaming (issue 15) ---------------------------------------------------------


def test_hf_sampling_keeps_the_top_k_tokens(tiny_model_dir, tmp_path):
    """top_k reaches transformers: k = 1 at a high temperature is the greedy answer, whatever the
    seed; k = 0 turns it off (transformers would apply 50 when it is not passed)."""
    backend = LocalBackend(ModelSpec(kind="local", model_path=str(tiny_model_dir)), tmp_path)
    greedy = backend.generate([CONVERSATION], SamplingParams(max_new_tokens=8, temperature=0))[0].text
    hot = SamplingParams(max_new_tokens=8, temperature=5.0, top_p=1.0, top_k=1)
    assert [backend.generate([CONVERSATION], replace(hot, seed=s))[0].text for s in (1, 2, 3)] == [greedy] * 3
    assert backend._generate_kwargs(replace(hot, top_k=0))["top_k"] == 0
    assert {backend.generate([CONVERSATION], replace(hot, top_k=0, seed=s))[0].text for s in (1, 2, 3)} != {greedy}


def test_a_local_answer_names_its_engine_and_timings(tiny_model_dir, tmp_path):
    backend = LocalBackend(ModelSpec(kind="local", model_path=str(tiny_model_dir)), tmp_path)
    (gen,) = backend.generate([CONVERSATION], SamplingParams(max_new_tokens=5, temperature=0))
    assert gen.engine == "hf" and gen.queue_ms == 0
    assert gen.first_token_ms is not None and 0 <= gen.first_token_ms <= gen.latency_ms
    timings = gen.timings()
    assert timings["total_ms"] == gen.latency_ms and set(timings) == {"queue_ms", "first_token_ms", "total_ms", "tokens_per_s"}


def test_an_hf_stream_yields_deltas_that_add_up_to_the_greedy_answer(tiny_model_dir, tmp_path):
    backend = LocalBackend(ModelSpec(kind="local", model_path=str(tiny_model_dir)), tmp_path)
    params = SamplingParams(max_new_tokens=8, temperature=0)
    (whole,) = backend.generate([CONVERSATION], params)
    stream = backend.stream(CONVERSATION, params)
    deltas = list(stream)
    assert len(deltas) > 1 and "".join(deltas).strip() == whole.text
    result = stream.result
    assert (result.text, result.completion_tokens, result.finish_reason) == (whole.text, whole.completion_tokens, whole.finish_reason)
    assert result.engine == "hf" and result.first_token_ms is not None


def test_an_endpoint_streams_with_stream_true_and_reads_usage():
    with ChatServer() as server:
        backend = EndpointBackend(ModelSpec(kind="endpoint", base_url=server.url, endpoint_model="m"))
        stream = backend.stream(CONVERSATION, SamplingParams(max_new_tokens=20))
        deltas = list(stream)
    assert deltas == ["echo", " (4", " messages):", " reverse", " the", " list"]
    assert server.requests[0]["body"]["stream"] is True
    result = stream.result
    assert result.text == "echo (4 messages): reverse the list" and result.engine == "openai"
    assert (result.prompt_tokens, result.completion_tokens, result.finish_reason) == (11, 6, "stop")


@pytest.mark.parametrize(
    "body, error",
    [
        (b"data: {not json\n\n", "unexpected stream chunk"),
        (b'data: {"choices": [{"delta": {"content": 5}}]}\n\n', "unexpected stream chunk"),
        (b'data: {"choices": "x"}\n\n', "unexpected stream chunk"),
        (b"data: " + b"x" * (2**20 + 10) + b"\n\n", "larger than"),
    ],
)
def test_a_hostile_stream_is_a_clear_error(body, error):
    with ChatServer(stream_body=body) as server:
        backend = EndpointBackend(ModelSpec(kind="endpoint", base_url=server.url, endpoint_model="m", max_retries=0))
        with pytest.raises(GenerationError, match=error):
            list(backend.stream(CONVERSATION, SamplingParams()))


def test_a_stream_without_usage_counts_its_chunks_and_ignores_comments():
    body = b': keep-alive\n\ndata: {"choices": [{"delta": {"content": "a"}}]}\n\nevent: x\ndata: {"choices": [{"delta": {"content": "b"}, "finish_reason": "length"}]}\n\n'
    with ChatServer(stream_body=body) as server:
        backend = EndpointBackend(ModelSpec(kind="endpoint", base_url=server.url, endpoint_model="m"))
        result = backend.stream(CONVERSATION, SamplingParams()).read()
    assert (result.text, result.completion_tokens, result.finish_reason) == ("ab", 2, "length")


def test_engine_choice_follows_the_member_and_says_why_it_cannot(tmp_path, monkeypatch):
    from modeling.ml import generation

    gguf = ModelSpec(kind="local", model_path=str(tmp_path), gguf_file="m.gguf")
    folder = ModelSpec(kind="local", model_path=str(tmp_path))
    assert generation.engine_planned(kind="local", gguf_file="m.gguf") == "llama.cpp"
    assert generation.engine_planned(kind="checkpoint", gguf_file="") == "hf"
    assert generation.engine_planned(kind="endpoint", gguf_file="", engine="hf") == "openai"
    assert generation.engine_for(replace(gguf, engine="hf")) == "hf"
    with pytest.raises(GenerationError, match="llama.cpp serves GGUF files"):
        generation.engine_for(replace(folder, engine="llama.cpp"))
    with pytest.raises(GenerationError, match="unknown engine"):
        generation.engine_for(replace(folder, engine="tensorrt"))
    monkeypatch.setattr(generation, "llamacpp_installed", lambda: False)
    assert generation.engine_for(gguf) == "hf"  # auto falls back
    with pytest.raises(GenerationError, match="not installed on this worker"):
        generation.engine_for(replace(gguf, engine="llama.cpp"))
