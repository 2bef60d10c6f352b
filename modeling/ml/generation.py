"""Generation backends behind one interface: local transformers models (a directory, a GGUF file,
or a round's checkpoint: base + LoRA adapter) and OpenAI-compatible chat-completions endpoints.

Plain Python: dataclasses in, dataclasses out, no Django. torch/transformers/peft are imported
inside functions. A loaded model is cached per process (``backend_for``), so a worker loads it
once and reuses it across tasks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class ModelSpec:
    """Where a member's model lives. Hashable: it keys the per-process backend cache."""

    kind: str  # "local" | "endpoint" | "checkpoint"
    # Not part of the cache key: members that differ only in name and sampling settings (the
    # demo's SmolLM2 at two temperatures) share one loaded model.
    name: str = field(default="", compare=False)
    model_path: str = ""  # a model directory; for a checkpoint, the adapter or full-weights directory
    gguf_file: str = ""  # a GGUF file name inside model_path
    base: ModelSpec | None = None  # a checkpoint's base model (for LoRA adapters)
    base_url: str = ""
    endpoint_model: str = ""
    api_key: str = field(default="", repr=False, compare=False, hash=False)
    timeout_s: float = 120.0
    max_retries: int = 2


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length" | "error"
    latency_ms: int
    # Set when this one answer is unusable (an endpoint's malformed or oversized reply); the
    # caller records it and goes on with the member's other answers.
    error: str = ""


class GenerationError(Exception):
    """A member could not answer (endpoint down, model missing); the message says why."""


class _BadAnswer(Exception):
    """One reply that cannot be used; asking the same endpoint again is not expected to help."""


#: An endpoint's reply is read up to this size: a chat answer of max_new_tokens is far smaller,
#: and a server that sends more is not one to trust with the worker's memory.
MAX_ANSWER_BYTES = 8 * 2**20


class Backend(Protocol):
    def generate(self, conversations: list[list[dict]], params: SamplingParams) -> list[Generation]: ...


# --- local transformers models --------------------------------------------------------------


def gguf_cache_dir(model_dir: str, gguf_file: str, cache_root: str | os.PathLike) -> Path:
    """Where the one-time HF conversion of a GGUF file lives (keyed by the file's path and size)."""
    source = Path(model_dir) / gguf_file
    stat = source.stat()
    key = hashlib.sha256(f"{source.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:16]
    return Path(cache_root) / "converted" / f"{source.stem}-{key}"


def convert_gguf(model_dir: str, gguf_file: str, cache_root: str | os.PathLike) -> Path:
    """Dequantize a GGUF model once into a plain HF folder: reloads in ~0.1 s instead of ~25 s,
    and it can be fine-tuned (a GGUF-loaded model is flagged quantized). Written to a temporary
    folder and renamed into place, so a crash never leaves a half-written model to load."""
    target = gguf_cache_dir(model_dir, gguf_file, cache_root)
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    if not (Path(model_dir) / gguf_file).exists():
        raise GenerationError(f"model file missing: {Path(model_dir) / gguf_file}")
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, gguf_file=gguf_file, quantization_config=GgufConfig(dequantize=True)
    )
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_local_dir(spec: ModelSpec, cache_root: str | os.PathLike) -> Path:
    if spec.gguf_file:
        return convert_gguf(spec.model_path, spec.gguf_file, cache_root)
    path = Path(spec.model_path)
    if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
        raise GenerationError(f"model directory missing or not a model: {path}")
    return path


class LocalBackend:
    """A transformers causal LM, generating a batch of conversations at once (left padding)."""

    def __init__(self, spec: ModelSpec, cache_root: str | os.PathLike, device: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from modeling.ml.devices import pick_device

        self.device = device or pick_device()
        if spec.kind == "checkpoint" and (Path(spec.model_path) / "adapter_config.json").exists():
            if spec.base is None:
                raise GenerationError(f"checkpoint {spec.model_path} is a LoRA adapter but has no base model")
            from peft import PeftModel

            base_dir = resolve_local_dir(spec.base, cache_root)
            model = AutoModelForCausalLM.from_pretrained(base_dir)
            model = PeftModel.from_pretrained(model, spec.model_path).merge_and_unload()
            tokenizer_dir = spec.model_path if (Path(spec.model_path) / "tokenizer_config.json").exists() else base_dir
        else:
            model_dir = resolve_local_dir(spec, cache_root)
            model = AutoModelForCausalLM.from_pretrained(model_dir)
            tokenizer_dir = model_dir
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        # Decoder-only batches pad on the left, so every row's last token is its prompt's end.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = model.to(self.device).eval()
        self._torch = torch

    def prompt_text(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def generate(self, conversations: list[list[dict]], params: SamplingParams) -> list[Generation]:
        torch = self._torch
        texts = [self.prompt_text(m) for m in conversations]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        started = time.perf_counter()
        with torch.inference_mode():
            output = self.model.generate(
                **batch,
                max_new_tokens=params.max_new_tokens,
                do_sample=params.temperature > 0,
                temperature=params.temperature if params.temperature > 0 else None,
                top_p=params.top_p if params.temperature > 0 else None,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        latency_ms = int((time.perf_counter() - started) * 1000)
        prompt_len = batch["input_ids"].shape[1]
        eos_ids = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} - {None}
        results = []
        for row, mask in zip(output, batch["attention_mask"]):
            completion = row[prompt_len:].tolist()
            stopped = False
            for i, token in enumerate(completion):
                if token in eos_ids:
                    completion, stopped = completion[:i], True
                    break
            results.append(
                Generation(
                    text=self.tokenizer.decode(completion, skip_special_tokens=True).strip(),
                    prompt_tokens=int(mask.sum()),
                    completion_tokens=len(completion),
                    finish_reason="stop" if stopped else "length",
                    latency_ms=latency_ms,  # the batch's wall time: rows are generated together
                )
            )
        return results


# --- OpenAI-compatible endpoints ------------------------------------------------------------


def _count(value) -> int:
    """A token count from a server: a whole number the database column can hold, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31 else 0


class EndpointBackend:
    """POST {base_url}/chat/completions (vLLM, TGI, llama.cpp server, Ollama), one conversation
    per request, with a timeout and retries on connection errors, 429 and 5xx."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.url = spec.base_url.rstrip("/") + "/chat/completions"

    def _post(self, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.spec.api_key:
            headers["Authorization"] = f"Bearer {self.spec.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        last = ""
        for attempt in range(self.spec.max_retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.spec.timeout_s) as response:
                    raw = response.read(MAX_ANSWER_BYTES + 1)
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode(errors="replace")
                last = f"HTTP {exc.code} from {self.url}: {detail}"
                if exc.code != 429 and exc.code < 500:
                    break  # a 4xx other than 429 will not get better by asking again
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last = f"{self.url} unreachable: {getattr(exc, 'reason', exc)}"
            else:
                if len(raw) > MAX_ANSWER_BYTES:
                    raise _BadAnswer(f"the reply is larger than {MAX_ANSWER_BYTES // 2**20} MiB")
                try:
                    return json.loads(raw)
                except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, or nested past the stack
                    raise _BadAnswer(f"the reply is not JSON ({type(exc).__name__})") from None
            if attempt < self.spec.max_retries:
                time.sleep(min(8.0, 0.5 * 2**attempt))
        raise GenerationError(last)

    def generate(self, conversations: list[list[dict]], params: SamplingParams) -> list[Generation]:
        results = []
        for messages in conversations:
            body = {
                "model": self.spec.endpoint_model,
                "messages": messages,
                "max_tokens": params.max_new_tokens,
                "temperature": params.temperature,
                "top_p": params.top_p,
            }
            if params.seed is not None:
                body["seed"] = params.seed
            started = time.perf_counter()
            try:
                data = self._post(body)
                choice = data["choices"][0]
                text = choice["message"]["content"] or ""
                if not isinstance(text, str):
                    raise _BadAnswer(f"the answer's content is {type(text).__name__}, not text")
                usage = data.get("usage") or {}
                prompt_tokens, completion_tokens = (_count(usage.get(k)) for k in ("prompt_tokens", "completion_tokens"))
                finish_reason = str(choice.get("finish_reason") or "stop")[:20]
            except _BadAnswer as exc:
                results.append(Generation("", 0, 0, "error", int((time.perf_counter() - started) * 1000), error=f"{self.url}: {exc}"))
                continue
            except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
                error = f"{self.url}: unexpected answer ({type(exc).__name__}): {str(data)[:200]}"
                results.append(Generation("", 0, 0, "error", int((time.perf_counter() - started) * 1000), error=error))
                continue
            results.append(
                Generation(
                    text=text.strip(),
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    finish_reason=finish_reason,
                    latency_ms=int((time.perf_counter() - started) * 1000),
                )
            )
        return results


# --- the per-process cache ------------------------------------------------------------------


@lru_cache(maxsize=4)
def _cached_local(spec: ModelSpec, cache_root: str) -> LocalBackend:
    return LocalBackend(spec, cache_root)


def backend_for(spec: ModelSpec, cache_root: str | os.PathLike) -> Backend:
    """The backend for a member; local models are loaded once per process and reused."""
    if spec.kind == "endpoint":
        return EndpointBackend(spec)
    if spec.kind in ("local", "checkpoint"):
        return _cached_local(spec, str(cache_root))
    raise GenerationError(f"unknown member kind {spec.kind!r}")
