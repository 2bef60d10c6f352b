"""The vllm engine's process management (modeling/ml/serving.py), with a stand-in for ``vllm
serve``: tests/modeling/chat_server.py run as a real server process on the port it is given.
vLLM itself needs CUDA and is never needed by the tests; what is checked here is everything
around it: the choice of engine, the subprocess's start, readiness, failure and stop, the merge
of a LoRA checkpoint, and that answers and streams come back named "vllm"."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from modeling.ml import devices, generation, serving
from modeling.ml.generation import GenerationError, ModelSpec, SamplingParams, backend_for, engine_for, release_models

STAND_IN = f"{sys.executable} {Path(__file__).with_name('chat_server.py')}"
ASK = [{"role": "user", "content": "hello"}]


@pytest.fixture
def gpu_host(monkeypatch):
    """A worker that has CUDA and a vLLM command (the stand-in)."""
    monkeypatch.setattr(devices, "cuda_available", lambda: True)
    monkeypatch.setenv("ARBITER_VLLM_COMMAND", STAND_IN)
    monkeypatch.setenv("ARBITER_VLLM_START_TIMEOUT", "60")
    yield
    serving.stop_servers()


def test_auto_serves_a_model_directory_through_a_managed_vllm_server(gpu_host, tiny_model_dir, tmp_path):
    spec = ModelSpec(kind="local", model_path=str(tiny_model_dir))
    assert engine_for(spec) == "vllm"
    backend = backend_for(spec, tmp_path)
    (gen,) = backend.generate([ASK], SamplingParams())
    assert gen.engine == "vllm" and gen.text == f"{tiny_model_dir.name}: hello"
    stream = backend.stream(ASK, SamplingParams())
    assert "".join(stream) == f"{tiny_model_dir.name}: hello" and stream.result.engine == "vllm"
    # one server per model, reused; stopped when a round needs the GPU
    server = serving.server_for(tiny_model_dir)
    assert backend_for(spec, tmp_path).spec.base_url == server.url and server.alive()
    release_models()
    assert not server.alive() and serving._servers == {}


def test_the_managed_server_is_sent_top_k_and_a_plain_endpoint_is_not(gpu_host, tiny_model_dir, tmp_path, monkeypatch):
    """vLLM takes ``top_k`` beside the OpenAI fields, so a local model samples from the same
    top-k 50 there as through HF and llama.cpp; OpenAI's own server refuses unknown fields."""
    import json

    from tests.modeling.chat_server import ChatServer

    log = tmp_path / "requests.jsonl"
    monkeypatch.setenv("CHAT_SERVER_LOG", str(log))
    backend = backend_for(ModelSpec(kind="local", model_path=str(tiny_model_dir)), tmp_path)
    backend.generate([ASK], SamplingParams())
    "".join(backend.stream(ASK, SamplingParams(top_k=7)))
    backend.generate([ASK], SamplingParams(top_k=0))  # off: the server's own default
    sent = [json.loads(line) for line in log.read_text().splitlines()]
    assert [body.get("top_k") for body in sent] == [50, 7, None] and sent[1]["stream"] is True
    with ChatServer() as server:
        plain = backend_for(ModelSpec(kind="endpoint", base_url=server.url, endpoint_model="m"), tmp_path)
        plain.generate([ASK], SamplingParams())
        assert "top_k" not in server.requests[0]["body"]


def test_a_lora_checkpoint_is_merged_once_then_served(gpu_host, tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    checkpoint = tmp_path / "round-1" / "policy"
    model.save_pretrained(checkpoint)
    spec = ModelSpec(kind="checkpoint", model_path=str(checkpoint), base=ModelSpec(kind="local", model_path=str(tiny_model_dir)))
    (gen,) = backend_for(spec, tmp_path).generate([ASK], SamplingParams())
    assert gen.text == "merged: hello"  # the server was given checkpoint/merged
    assert (checkpoint / "merged" / "config.json").exists() and (checkpoint / "merged" / "tokenizer_config.json").exists()
    assert not list(checkpoint.glob("merged.tmp-*"))


def test_a_server_that_fails_to_start_is_a_clear_error_with_what_it_printed(gpu_host, tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    chosen = ModelSpec(kind="local", model_path=str(empty), engine="vllm")
    with pytest.raises(GenerationError, match=r"vllm: the server for .*not-a-model exited with 1: .*no config.json"):
        backend_for(chosen, tmp_path)
    # auto tries hf next, and says why both failed
    with pytest.raises(GenerationError, match=r"exited with 1.*; and hf: model directory missing or not a model"):
        backend_for(replace(chosen, engine="auto"), tmp_path)


def test_a_server_that_never_answers_is_stopped_after_the_timeout(gpu_host, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("ARBITER_VLLM_COMMAND", f"{sys.executable} -c 'import time; print(\"compiling\", flush=True); time.sleep(60)'")
    monkeypatch.setenv("ARBITER_VLLM_START_TIMEOUT", "2")
    with pytest.raises(GenerationError, match="did not answer in 2 s: compiling"):
        serving.ManagedServer(tiny_model_dir)


def test_without_cuda_vllm_is_refused_and_auto_stays_on_cpu_engines(monkeypatch, tiny_model_dir):
    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    monkeypatch.setenv("ARBITER_VLLM_COMMAND", STAND_IN)
    spec = ModelSpec(kind="local", model_path=str(tiny_model_dir))
    assert engine_for(spec) == "hf"
    with pytest.raises(GenerationError, match="vllm needs CUDA"):
        engine_for(replace(spec, engine="vllm"))
    with pytest.raises(GenerationError, match="not GGUF files"):
        engine_for(ModelSpec(kind="local", model_path=str(tiny_model_dir), gguf_file="m.gguf", engine="vllm"))
    assert generation.engine_planned(kind="local", gguf_file="", engine="vllm") == "vllm"
