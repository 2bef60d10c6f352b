"""The llama.cpp engine on the real SmolLM2 GGUF (the packaged Q4_1 file): answers, parallel
sequences, streaming, seeds, and clear errors. Loading takes ~0.2 s; each test generates a few
dozen tokens."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest

from modeling.ml import devices, generation
from modeling.ml.generation import GenerationError, LlamaCppBackend, ModelSpec, SamplingParams, backend_for
from modeling.services.members import SMOLLM2_GGUF, SMOLLM2_PACKAGE

pytest.importorskip("llama_cpp")

PACKAGE = Path(importlib.util.find_spec(SMOLLM2_PACKAGE).submodule_search_locations[0])
FRANCE = [{"role": "system", "content": "You answer in one short sentence."}, {"role": "user", "content": "What is the capital of France?"}]
SUM = [{"role": "user", "content": "What is 2 + 2?"}]
GREEDY = SamplingParams(max_new_tokens=24, temperature=0)


@pytest.fixture(scope="module")
def smollm2():
    return LlamaCppBackend(PACKAGE / SMOLLM2_GGUF)  # threads: the cores free at each call


def test_the_prompt_is_the_ggufs_own_chat_template(smollm2):
    text = smollm2.formatter(messages=FRANCE).prompt
    assert text == ("<|im_start|>system\nYou answer in one short sentence.<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                    "<|im_start|>assistant\n")
    # SmolLM2's template gives a conversation without a system message its default one.
    assert smollm2.formatter(messages=SUM).prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    tokens = smollm2.prompt_tokens(FRANCE)
    assert tokens[0] == smollm2.llm.tokenize(b"<|im_start|>", add_bos=False, special=True)[0]  # parsed as one special token


def test_an_answer_names_its_engine_and_timings(smollm2):
    (gen,) = smollm2.generate([FRANCE], GREEDY)
    assert "Paris" in gen.text
    assert gen.engine == "llama.cpp" and gen.finish_reason in {"stop", "length"}
    assert 0 < gen.completion_tokens <= 24 and gen.prompt_tokens == len(smollm2.prompt_tokens(FRANCE))
    assert 0 < gen.first_token_ms <= gen.latency_ms and gen.timings()["tokens_per_s"] > 0


def test_parallel_sequences_answer_their_own_prompts(smollm2):
    """One context, two sequences: each answer is its own prompt's, as when asked alone."""
    batched = smollm2.generate([FRANCE, SUM, FRANCE], GREEDY)
    alone = [smollm2.generate([c], GREEDY)[0] for c in (FRANCE, SUM)]
    assert "Paris" in batched[0].text and "Paris" in batched[2].text and "Paris" not in batched[1].text and "4" in batched[1].text
    assert batched[1].prompt_tokens == alone[1].prompt_tokens
    # Greedy answers agree with the one-at-a-time answers at least at their start (batched kernels
    # may round differently further on).
    assert batched[0].text[:12] == alone[0].text[:12] and batched[1].text[:4] == alone[1].text[:4]


def test_the_stream_adds_up_to_the_answer(smollm2):
    (whole,) = smollm2.generate([FRANCE], GREEDY)
    stream = smollm2.stream(FRANCE, GREEDY)
    deltas = list(stream)
    assert len(deltas) > 3 and "".join(deltas).strip() == whole.text == stream.result.text
    assert stream.result.completion_tokens == whole.completion_tokens and stream.result.engine == "llama.cpp"
    assert stream.first_token_ms is not None


def test_a_batch_streams_each_answer_with_its_own_settings(smollm2):
    """A live turn's two members in one context: their deltas interleave, each adds up to its own
    answer (greedy here: the same as asked alone), and each ends at its own max_new_tokens."""
    short = SamplingParams(max_new_tokens=5, temperature=0.0)
    events = list(smollm2.stream_batch([FRANCE, SUM], [GREEDY, short]))
    deltas = {i: "".join(d for j, d in events if j == i and isinstance(d, str)) for i in (0, 1)}
    done = {i: g for i, g in events if not isinstance(g, str)}
    assert [i for i, d in events if isinstance(d, str)][:4] in ([0, 1, 0, 1], [1, 0, 1, 0])  # side by side
    assert deltas[0].strip() == done[0].text and done[0].text[:12] == smollm2.generate([FRANCE], GREEDY)[0].text[:12]
    assert done[1].completion_tokens == 5 and done[1].finish_reason == "length" and done[1].engine == "llama.cpp"
    assert done[0].first_token_ms is not None and done[0].latency_ms >= done[0].first_token_ms
    # The same prompt twice (a live turn): computed once, copied to the second sequence; greedy,
    # both answer as the prompt asked alone does.
    twice = {i: g for i, g in smollm2.stream_batch([FRANCE, FRANCE], [GREEDY, GREEDY]) if not isinstance(g, str)}
    assert twice[0].text[:12] == twice[1].text[:12] == done[0].text[:12] and twice[1].prompt_tokens == done[0].prompt_tokens
    # A conversation the model cannot take fails alone; the other is answered.
    too_long = [{"role": "user", "content": "word " * 20_000}]
    events = list(smollm2.stream_batch([too_long, SUM], [GREEDY, GREEDY]))
    results = {i: g for i, g in events if not isinstance(g, str)}
    assert "does not fit" in results[0].error and "4" in results[1].text


def test_a_seed_reproduces_a_sampled_answer(smollm2):
    params = SamplingParams(max_new_tokens=24, temperature=1.0, top_p=0.95, seed=11)
    first, second = (smollm2.generate([SUM, FRANCE], params) for _ in range(2))
    assert [g.text for g in first] == [g.text for g in second]
    others = [smollm2.generate([FRANCE], replace(params, seed=s))[0].text for s in (12, 13, 14)]
    assert len(set(others)) > 1


def test_sampling_keeps_the_top_k_tokens_as_the_hf_path_does(smollm2):
    """k = 1 at a high temperature is the greedy answer whatever the seed (the sampler chain
    applies top-k); without it the same settings wander off."""
    (greedy,) = smollm2.generate([FRANCE], GREEDY)
    hot = SamplingParams(max_new_tokens=24, temperature=5.0, top_p=1.0, top_k=1)
    assert {g.text for g in smollm2.generate([FRANCE, FRANCE], replace(hot, seed=5))} == {greedy.text}
    assert {g.text for g in smollm2.generate([FRANCE, FRANCE], replace(hot, top_k=0, seed=5))} != {greedy.text}
    assert SamplingParams().top_k == 50  # transformers' default, so both engines sample alike


def test_max_new_tokens_stops_an_answer_with_length(smollm2):
    (gen,) = smollm2.generate([[{"role": "user", "content": "Write a long story about a dragon."}]], SamplingParams(max_new_tokens=5, temperature=0))
    assert gen.completion_tokens == 5 and gen.finish_reason == "length"


def test_a_prompt_longer_than_the_models_context_fails_alone_with_a_clear_error(smollm2):
    huge = [{"role": "user", "content": "word " * (smollm2.n_ctx_train + 10)}]
    answers = smollm2.generate([FRANCE, huge, SUM], GREEDY)
    assert "Paris" in answers[0].text and "4" in answers[2].text
    assert answers[1].finish_reason == "error" and "does not fit the model's context" in answers[1].error
    with pytest.raises(GenerationError, match="does not fit the model's context"):
        list(smollm2.stream(huge, GREEDY))


def test_a_file_that_is_not_gguf_is_a_clear_error_naming_the_engine(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(GenerationError, match="llama.cpp could not load broken.gguf"):
        LlamaCppBackend(bad)
    with pytest.raises(GenerationError, match="llama.cpp: model file missing"):
        LlamaCppBackend(tmp_path / "missing.gguf")


def test_auto_serves_a_gguf_through_llamacpp_and_falls_back_to_hf_saying_why(tmp_path, monkeypatch):
    spec = ModelSpec(kind="local", model_path=str(PACKAGE), gguf_file=SMOLLM2_GGUF)
    assert backend_for(spec, tmp_path).engine == "llama.cpp"
    generation._cached_llamacpp.cache_clear()

    def refuse(model_file, weights=""):
        raise GenerationError("llama.cpp could not load it: unsupported architecture")

    fallback = object.__new__(generation.LocalBackend)
    monkeypatch.setattr(generation, "_cached_llamacpp", refuse)
    monkeypatch.setattr(generation, "_cached_local", lambda spec, root: fallback)
    backend = backend_for(spec, tmp_path)
    assert backend is fallback and backend.note == "llama.cpp could not load it: unsupported architecture; served by hf instead"
    with pytest.raises(GenerationError, match="unsupported architecture"):  # chosen explicitly: no fallback
        backend_for(replace(spec, engine="llama.cpp"), tmp_path)


def test_prompts_share_their_common_prefix_and_answer_as_when_asked_alone(smollm2, monkeypatch):
    """Three prompts with SmolLM2's default system turn: the shared tokens are read once for all
    (then copied to each sequence), and each greedy answer starts as when its prompt is alone."""
    from llama_cpp import _internals as internals

    prompts = [SUM, [{"role": "user", "content": "Name a primary colour."}], [{"role": "user", "content": "What is the capital of Italy?"}]]
    alone = [smollm2.generate([c], GREEDY)[0].text for c in prompts]
    read: list[int] = []
    decode = internals.LlamaContext.decode

    def counting(ctx, batch):
        read.append(batch.batch.n_tokens)
        return decode(ctx, batch)

    monkeypatch.setattr(internals.LlamaContext, "decode", counting)
    together = smollm2.generate(prompts, GREEDY)
    tokens = [smollm2.prompt_tokens(c) for c in prompts]
    shared = generation.common_prefix(tokens)
    assert shared >= 20  # "<|im_start|>system\nYou are a helpful AI assistant named SmolLM..."
    # Each new token is read back to sample the next, but for the last of an answer cut at length.
    answer_reads = sum(g.completion_tokens - (g.finish_reason == "length") for g in together)
    prompt_reads = sum(read) - answer_reads
    assert prompt_reads == shared + sum(len(t) - shared for t in tokens)  # not sum(len(t))
    assert [g.text[:8] for g in together] == [a[:8] for a in alone]


def test_common_prefix():
    assert generation.common_prefix([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert generation.common_prefix([[1, 2], [1, 2]]) == 2 and generation.common_prefix([[5], [6]]) == 0
    assert generation.common_prefix([]) == 0


def test_a_q4_1_file_is_served_from_a_q8_0_copy_made_once(smollm2, tmp_path, monkeypatch):
    """This llama.cpp build has no fast Q4_1 kernels: the packaged file is served from a Q8_0
    copy in the model cache, written whole then renamed, once; the copy answers as the file does.
    A Q8_0 file is served as it is, and ARBITER_LLAMACPP_REQUANTIZE=off serves files as shipped."""
    shipped = PACKAGE / SMOLLM2_GGUF
    assert generation.gguf_file_type(shipped) == "Q4_1"
    copy, weights = generation.served_gguf(shipped, tmp_path)
    assert copy.parent == tmp_path / "converted" and copy.name.endswith(".Q8_0.gguf") and generation.gguf_file_type(copy) == "Q8_0"
    assert weights == "a Q8_0 copy of the Q4_1 file (no fast Q4_1 kernels in this llama.cpp build)"
    assert not list(copy.parent.glob("*.tmp-*"))
    written = copy.stat().st_mtime_ns
    assert generation.served_gguf(shipped, tmp_path) == (copy, weights) and copy.stat().st_mtime_ns == written
    assert generation.served_gguf(copy, tmp_path) == (copy, "")

    spec = ModelSpec(kind="local", model_path=str(PACKAGE), gguf_file=SMOLLM2_GGUF)
    generation._cached_llamacpp.cache_clear()
    served = backend_for(spec, tmp_path)
    assert served.model_file == copy and served.weights == weights
    (answer,) = served.generate([FRANCE], GREEDY)
    assert answer.engine == "llama.cpp" and answer.text[:12] == smollm2.generate([FRANCE], GREEDY)[0].text[:12]

    monkeypatch.setenv("ARBITER_LLAMACPP_REQUANTIZE", "off")
    assert generation.served_gguf(shipped, tmp_path) == (shipped, "")
    generation._cached_llamacpp.cache_clear()


def test_a_copy_that_cannot_be_made_serves_the_file_as_shipped_and_leaves_nothing(tmp_path, monkeypatch):
    import llama_cpp

    def half_written(source, target, params):
        Path(target.decode()).write_bytes(b"GGUF half")
        return 1

    monkeypatch.setattr(llama_cpp, "llama_model_quantize", half_written)
    shipped = PACKAGE / SMOLLM2_GGUF
    assert generation.served_gguf(shipped, tmp_path) == (shipped, "")
    assert not list((tmp_path / "converted").iterdir())
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x00" * 64)
    assert generation.gguf_file_type(broken) == "" and generation.served_gguf(broken, tmp_path) == (broken, "")
    assert generation.gguf_file_type(tmp_path / "missing.gguf") == ""


@pytest.mark.slow
def test_a_round_checkpoint_of_the_gguf_base_is_converted_once_and_served_by_llamacpp(tmp_path):
    """A LoRA checkpoint on SmolLM2 (adapter weights made non-zero, so the merge changes the
    model) becomes policy.Q8_0.gguf beside it; llama.cpp's greedy answer starts as transformers'
    answer from the same checkpoint, and its weights are the merged ones."""
    import gguf
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from modeling.ml.generation import LocalBackend, resolve_local_dir
    from modeling.ml.gguf_export import POLICY_GGUF, merged_policy

    base_spec = ModelSpec(kind="local", model_path=str(PACKAGE), gguf_file=SMOLLM2_GGUF)
    base_dir = resolve_local_dir(base_spec, tmp_path)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), LoraConfig(r=4, target_modules=["q_proj", "k_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    checkpoint = tmp_path / "round-1" / "policy"
    model.save_pretrained(checkpoint)
    spec = ModelSpec(kind="checkpoint", model_path=str(checkpoint), base=base_spec)

    served = backend_for(spec, tmp_path)
    assert served.engine == "llama.cpp" and (checkpoint / POLICY_GGUF).is_file()
    assert not list(checkpoint.glob("*.tmp-*"))  # written whole, then renamed
    mtime = (checkpoint / POLICY_GGUF).stat().st_mtime_ns
    generation._cached_llamacpp.cache_clear()
    backend_for(spec, tmp_path)
    assert (checkpoint / POLICY_GGUF).stat().st_mtime_ns == mtime  # converted once

    merged = merged_policy(checkpoint, base_dir).state_dict()
    reader = gguf.GGUFReader(checkpoint / POLICY_GGUF)
    tensors = {t.name: t for t in reader.tensors}
    v = tensors["blk.3.attn_v.weight"]
    v_back = gguf.quants.dequantize(v.data, v.tensor_type).reshape(merged["model.layers.3.self_attn.v_proj.weight"].shape)
    assert np.allclose(v_back, merged["model.layers.3.self_attn.v_proj.weight"].numpy(), atol=2e-2)
    assert "output.weight" not in tensors  # tied to the embeddings, as in the base file
    assert reader.fields["tokenizer.chat_template"].contents().startswith("{% for message in messages %}")

    hf = LocalBackend(spec, tmp_path)
    (ours,) = served.generate([FRANCE], GREEDY)
    (theirs,) = hf.generate([FRANCE], GREEDY)
    assert ours.text[:16] == theirs.text[:16], (ours.text, theirs.text)


def test_a_checkpoint_whose_shape_differs_from_its_gguf_base_is_refused(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from modeling.ml.gguf_export import GgufExportError, write_policy_gguf

    tiny = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with pytest.raises(GgufExportError, match="differs from its base GGUF"):
        write_policy_gguf(tiny.state_dict(), tiny.config, PACKAGE / SMOLLM2_GGUF, tiny_model_dir / "out.gguf")
    assert not list(tiny_model_dir.glob("out.gguf*"))


def test_llamacpp_threads_follow_the_cores_other_work_leaves_free(monkeypatch):
    """One thread per core that is busy elsewhere collapses llama.cpp (its threads spin-wait)."""
    import os

    readings = iter([])

    def times():
        return next(readings)

    monkeypatch.setattr(devices, "_cpu_times", times)
    monkeypatch.setattr(devices, "cpu_cores", lambda: 4)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    # (idle, total) jiffies before and after the window: 4 cores x 10 jiffies each
    for idle_share, free in ((1.0, 4), (0.75, 3), (0.5, 2), (0.2, 1), (0.0, 1)):
        readings = iter([(0, 0), (int(40 * idle_share), 40)])
        assert devices.free_cpu_cores(window_s=0) == free, idle_share
