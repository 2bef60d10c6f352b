"""Generation backends behind one interface (``Backend``: ``generate`` a batch, ``stream`` one
answer as text deltas), one per engine:

- ``llama.cpp`` (``LlamaCppBackend``, the llama-cpp-python bindings): GGUF files on CPU, from the
  quantized weights; a batch decodes as parallel sequences of one llama.cpp context. A file whose
  weights this build has no fast CPU kernels for (Q4_1) is served from a Q8_0 copy made once in
  the model cache (``served_gguf``).
- ``hf`` (``LocalBackend``, transformers ``generate``): model directories, round checkpoints (base
  + LoRA adapter), and GGUF files dequantized once; the fallback for what the others cannot load.
- ``openai`` (``EndpointBackend``): OpenAI-compatible chat-completions servers (vLLM, TGI,
  llama.cpp server, Ollama), streamed with ``stream: true``.

``engine_for`` picks a member's engine ("auto": llama.cpp for GGUF when the bindings are
installed, else hf). Every ``Generation`` names the engine that made it, with its timings.

Plain Python: dataclasses in, dataclasses out, no Django. torch/transformers/peft/llama_cpp are
imported inside functions. A loaded model is cached per process (``backend_for``), so a worker
loads it once and reuses it across tasks.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Protocol

#: The engines a local member can name; "auto" lets ``engine_for`` choose.
ENGINES = ("auto", "llama.cpp", "hf", "vllm")


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
    engine: str = "auto"  # one of ENGINES; endpoints are always "openai"


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    #: The local engines keep the k likeliest tokens before top-p: 50 is what transformers'
    #: ``generate`` applies when nothing sets it, so HF and llama.cpp sample from the same
    #: distribution (and llama.cpp's top-p sorts 50 candidates, not the whole vocabulary). 0: off.
    #: OpenAI-compatible endpoints use their server's own (the API has no top_k), except the
    #: managed vLLM servers, which take vLLM's ``top_k`` field (``EndpointBackend.sends_top_k``).
    top_k: int = 50
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
    engine: str = ""  # the engine that made it: "llama.cpp" | "hf" | "openai"
    # From the call's start to this answer's own start (answers of one call that run one after
    # another wait for those before them; the rows of one batch start together).
    queue_ms: int | None = None
    first_token_ms: int | None = None  # from this answer's start to its first new token

    def timings(self) -> dict:
        """What a Response records of how it was made: queue wait, first token, tokens/s."""
        generating_s = self.latency_ms / 1000
        return {
            "queue_ms": self.queue_ms,
            "first_token_ms": self.first_token_ms,
            "total_ms": self.latency_ms,
            "tokens_per_s": round(self.completion_tokens / generating_s, 1) if generating_s > 0 and self.completion_tokens else None,
        }


class GenerationError(Exception):
    """A member could not answer (endpoint down, model missing); the message says why."""


class _BadAnswer(Exception):
    """One reply that cannot be used; asking the same endpoint again is not expected to help."""


#: An endpoint's reply is read up to this size: a chat answer of max_new_tokens is far smaller,
#: and a server that sends more is not one to trust with the worker's memory.
MAX_ANSWER_BYTES = 8 * 2**20


class Stream:
    """One answer as it is generated: iterate for the text deltas; once the iteration ends,
    ``result`` is the whole answer as a ``Generation`` (text, counts, timings).

    ``deltas`` yields text pieces and returns ``(completion_tokens, prompt_tokens, finish_reason)``
    (its StopIteration value); the timings are taken here, the same for every engine."""

    def __init__(self, deltas: Iterator[str], *, engine: str, started: float | None = None):
        self._deltas = deltas
        self.engine = engine
        self.started = time.perf_counter() if started is None else started
        self.first_token_ms: int | None = None
        self.result: Generation | None = None
        self._parts: list[str] = []

    def __iter__(self) -> Iterator[str]:
        completion_tokens, prompt_tokens, finish_reason = 0, 0, "stop"
        try:
            while True:
                delta = next(self._deltas)
                if not delta:
                    continue
                if self.first_token_ms is None:
                    self.first_token_ms = int((time.perf_counter() - self.started) * 1000)
                self._parts.append(delta)
                yield delta
        except StopIteration as done:
            if done.value:
                completion_tokens, prompt_tokens, finish_reason = done.value
        text = "".join(self._parts)
        self.result = Generation(
            text=text.strip(), prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            finish_reason=finish_reason, latency_ms=int((time.perf_counter() - self.started) * 1000),
            engine=self.engine, queue_ms=0, first_token_ms=self.first_token_ms,
        )

    def read(self) -> Generation:
        """Consume what is left and return the whole answer."""
        for _ in self:
            pass
        assert self.result is not None
        return self.result


class Backend(Protocol):
    engine: str

    def generate(self, conversations: list[list[dict]], params: SamplingParams) -> list[Generation]: ...

    def stream(self, messages: list[dict], params: SamplingParams) -> Stream: ...


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

    engine = "hf"
    note = ""  # why this engine serves the member, when it is not the one planned

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

    def _generate_kwargs(self, params: SamplingParams) -> dict:
        return {
            "max_new_tokens": params.max_new_tokens,
            "do_sample": params.temperature > 0,
            "temperature": params.temperature if params.temperature > 0 else None,
            "top_p": params.top_p if params.temperature > 0 else None,
            "top_k": params.top_k if params.temperature > 0 else None,  # 0 turns transformers' default 50 off
            "pad_token_id": self.tokenizer.pad_token_id,
        }

    def _completion(self, row) -> tuple[list[int], bool]:
        """A generated row's new tokens up to its end of sequence, and whether it stopped there."""
        eos_ids = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} - {None}
        completion = row.tolist()
        for i, token in enumerate(completion):
            if token in eos_ids:
                return completion[:i], True
        return completion, False

    def generate(self, conversations: list[list[dict]], params: SamplingParams) -> list[Generation]:
        torch = self._torch
        texts = [self.prompt_text(m) for m in conversations]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        first_token = _FirstTokenClock()
        started = time.perf_counter()
        with torch.inference_mode():
            output = self.model.generate(**batch, **self._generate_kwargs(params), streamer=first_token)
        latency_ms = int((time.perf_counter() - started) * 1000)
        first_token_ms = int((first_token.at - started) * 1000) if first_token.at else None
        prompt_len = batch["input_ids"].shape[1]
        results = []
        for row, mask in zip(output, batch["attention_mask"]):
            completion, stopped = self._completion(row[prompt_len:])
            results.append(
                Generation(
                    text=self.tokenizer.decode(completion, skip_special_tokens=True).strip(),
                    prompt_tokens=int(mask.sum()),
                    completion_tokens=len(completion),
                    finish_reason="stop" if stopped else "length",
                    latency_ms=latency_ms,  # the batch's wall time: rows are generated together
                    engine=self.engine, queue_ms=0, first_token_ms=first_token_ms,
                )
            )
        return results

    def stream(self, messages: list[dict], params: SamplingParams) -> Stream:
        """transformers' TextIteratorStreamer, with ``generate`` on a thread of its own."""
        import threading

        from transformers import TextIteratorStreamer

        torch = self._torch
        started = time.perf_counter()
        batch = self.tokenizer([self.prompt_text(messages)], return_tensors="pt", add_special_tokens=False).to(self.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        outcome: dict = {}

        def run():
            try:
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                with torch.inference_mode():
                    outcome["output"] = self.model.generate(**batch, **self._generate_kwargs(params), streamer=streamer)
            except BaseException as exc:  # surfaced to the reader below
                outcome["error"] = exc
                streamer.end()

        thread = threading.Thread(target=run, name="hf-stream", daemon=True)
        thread.start()

        def deltas():
            yield from streamer
            thread.join()
            if "error" in outcome:
                raise GenerationError(f"hf: {type(outcome['error']).__name__}: {outcome['error']}")
            prompt_len = batch["input_ids"].shape[1]
            completion, stopped = self._completion(outcome["output"][0][prompt_len:])
            return len(completion), prompt_len, "stop" if stopped else "length"

        return Stream(deltas(), engine=self.engine, started=started)


class _FirstTokenClock:
    """A transformers streamer that only notes when the first new tokens arrive (its first
    ``put`` is the prompt, its second the first generated step, for every row of the batch)."""

    def __init__(self):
        self.calls = 0
        self.at: float | None = None

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2:
            self.at = time.perf_counter()

    def end(self) -> None:
        pass


# --- OpenAI-compatible endpoints ------------------------------------------------------------


def _count(value) -> int:
    """A token count from a server: a whole number the database column can hold, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31 else 0


class EndpointBackend:
    """POST {base_url}/chat/completions (vLLM, TGI, llama.cpp server, Ollama), one conversation
    per request and a batch's requests in flight together, with a timeout and retries on
    connection errors, 429 and 5xx (a stream is retried only until its first byte)."""

    engine = "openai"
    note = ""  # why this engine serves the member, when it is not the one planned
    #: Send ``top_k`` (vLLM's extension of the API; OpenAI's own server refuses unknown fields):
    #: set for the managed vLLM servers (modeling/ml/serving.py), so a local model samples from
    #: the same distribution there as through HF and llama.cpp.
    sends_top_k = False
    #: Requests in flight at once in ``generate`` (a sampling batch is 8 conversations).
    CONCURRENCY = 8

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.url = spec.base_url.rstrip("/") + "/chat/completions"

    def _open(self, body: dict):
        """The open HTTP response to ``body``, after retries; the caller reads and closes it."""
        headers = {"Content-Type": "application/json"}
        if self.spec.api_key:
            headers["Authorization"] = f"Bearer {self.spec.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        last = ""
        for attempt in range(self.spec.max_retries + 1):
            try:
                return urllib.request.urlopen(request, timeout=self.spec.timeout_s)
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode(errors="replace")
                last = f"HTTP {exc.code} from {self.url}: {detail}"
                if exc.code != 429 and exc.code < 500:
                    break  # a 4xx other than 429 will not get better by asking again
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last = f"{self.url} unreachable: {getattr(exc, 'reason', exc)}"
            if attempt < self.spec.max_retries:
                time.sleep(min(8.0, 0.5 * 2**attempt))
        raise GenerationError(last)

    def _post(self, body: dict) -> dict:
        try:
            with self._open(body) as response:
                raw = response.read(MAX_ANSWER_BYTES + 1)
        except (TimeoutError, ConnectionError, OSError) as exc:  # dropped while the body was read
            raise GenerationError(f"{self.url}: the reply was cut off ({type(exc).__name__})") from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise _BadAnswer(f"the reply is larger than {MAX_ANSWER_BYTES // 2**20} MiB")
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, or nested past the stack
            raise _BadAnswer(f"the reply is not JSON ({type(exc).__name__})") from None

    def _body(self, messages: list[dict], params: SamplingParams) -> dict:
        body = {
            "model": self.spec.endpoint_model,
            "messages": messages,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if self.sends_top_k and params.top_k > 0:
            body["top_k"] = params.top_k
        return body

    def generate(self, conversations: list[list[dict]], params: SamplingParams) -> list[Generation]:
        """One request per conversation, up to ``CONCURRENCY`` in flight at once: a server that
        batches (vLLM's continuous batching, llama-server's parallel slots) decodes them together,
        where one at a time would leave it decoding a single sequence. Answers keep the order of
        ``conversations``; a bad answer is an error Generation and the others still come back. A
        server that cannot be reached (after retries) is a GenerationError for the whole call, as
        before: the requests not yet sent are dropped, those in flight end first."""
        called = time.perf_counter()
        if len(conversations) <= 1:
            return [self._answer(messages, params, called) for messages in conversations]
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=min(self.CONCURRENCY, len(conversations)), thread_name_prefix="endpoint")
        try:
            return list(pool.map(lambda messages: self._answer(messages, params, called), conversations))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _answer(self, messages: list[dict], params: SamplingParams, called: float) -> Generation:
        started = time.perf_counter()
        queue_ms = int((started - called) * 1000)
        failed = lambda error: Generation(  # noqa: E731
            "", 0, 0, "error", int((time.perf_counter() - started) * 1000), error=error, engine=self.engine, queue_ms=queue_ms,
        )
        data = None
        try:
            data = self._post(self._body(messages, params))
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
            if not isinstance(text, str):
                raise _BadAnswer(f"the answer's content is {type(text).__name__}, not text")
            usage = data.get("usage") or {}
            prompt_tokens, completion_tokens = (_count(usage.get(k)) for k in ("prompt_tokens", "completion_tokens"))
            finish_reason = str(choice.get("finish_reason") or "stop")[:20]
        except _BadAnswer as exc:
            return failed(f"{self.url}: {exc}")
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            return failed(f"{self.url}: unexpected answer ({type(exc).__name__}): {str(data)[:200]}")
        return Generation(
            text=text.strip(),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason=finish_reason,
            latency_ms=int((time.perf_counter() - started) * 1000),
            engine=self.engine, queue_ms=queue_ms,
        )

    def stream(self, messages: list[dict], params: SamplingParams) -> Stream:
        """``stream: true``: server-sent events, one ``data: {json}`` line per chunk, ``data: [DONE]``
        at the end. Read line by line with the same bounds as a whole reply: at most
        MAX_ANSWER_BYTES in all, a line at most 1 MiB; anything that is not a chunk is an error."""
        started = time.perf_counter()
        body = {**self._body(messages, params), "stream": True, "stream_options": {"include_usage": True}}

        def deltas():
            read, usage, finish_reason, pieces = 0, {}, "stop", 0
            with self._open(body) as response:
                while True:
                    try:
                        line = response.readline(2**20 + 1)
                    except (TimeoutError, ConnectionError, OSError) as exc:
                        raise GenerationError(f"{self.url}: the stream was cut off ({type(exc).__name__})") from None
                    if not line:
                        break
                    read += len(line)
                    if read > MAX_ANSWER_BYTES or len(line) > 2**20:
                        raise GenerationError(f"{self.url}: the stream is larger than {MAX_ANSWER_BYTES // 2**20} MiB")
                    line = line.strip()
                    if not line.startswith(b"data:"):
                        continue  # blank lines between events, ": keep-alive" comments, "event:" names
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        break
                    try:
                        chunk = json.loads(data)
                        usage = chunk.get("usage") or usage
                        choices = chunk.get("choices") or []
                        if not choices:  # the usage-only chunk at the end
                            continue
                        choice = choices[0]
                        finish_reason = str(choice.get("finish_reason") or finish_reason)[:20]
                        text = (choice.get("delta") or {}).get("content") or ""
                        if not isinstance(text, str):
                            raise TypeError(f"content is {type(text).__name__}")
                    except (ValueError, RecursionError, TypeError, AttributeError, IndexError) as exc:
                        raise GenerationError(f"{self.url}: unexpected stream chunk ({type(exc).__name__}): {data[:200]!r}") from None
                    if text:
                        pieces += 1
                        yield text
            if not isinstance(usage, dict):
                usage = {}
            completion_tokens = _count(usage.get("completion_tokens")) or pieces  # servers send ~a token per chunk
            return completion_tokens, _count(usage.get("prompt_tokens")), finish_reason

        return Stream(deltas(), engine=self.engine, started=started)


# --- llama.cpp ------------------------------------------------------------------------------


def _quiet_llamacpp() -> None:
    """llama.cpp's log lines off: the model loader's chatter, and a warning at every batch that
    the unified KV cache is larger than the training context (it holds all the sequences'
    contexts; ``LlamaCppBackend._decode`` keeps each sequence within its own). The bindings map
    ggml's levels from an older enum (its WARN arrives as ERROR and its ERROR as DEBUG), so only
    CRITICAL quiets them; failures reach us as return codes and exceptions, not log lines."""
    import logging

    logging.getLogger("llama-cpp-python").setLevel(logging.CRITICAL)


def common_prefix(sequences) -> int:
    """How many leading items all ``sequences`` share (0 for none given)."""
    sequences = list(sequences)
    if not sequences:
        return 0
    n = min(len(s) for s in sequences)
    for k in range(n):
        if any(s[k] != sequences[0][k] for s in sequences[1:]):
            return k
    return n


class LlamaCppBackend:
    """A GGUF model through the llama-cpp-python bindings, from its quantized weights.

    ``generate`` decodes a batch of conversations as parallel sequences of one llama.cpp context
    (llama.cpp's ``batched`` example: each step decodes one token of every unfinished sequence in
    one ``llama_decode``), which is where a CPU's throughput is; ``stream`` is the same loop with
    one sequence. The prompt is the GGUF's own chat template. Threads follow the cores free when a
    call starts (``free_cpu_cores``), unless ``threads`` fixes them."""

    engine = "llama.cpp"
    note = ""  # why this engine serves the member, when it is not the one planned
    #: Each sequence's context is its prompt plus max_new_tokens, rounded up to this.
    CONTEXT_STEP = 256
    #: Tokens per decode call while reading prompts (llama.cpp's default n_batch).
    PROMPT_BATCH = 512

    def __init__(self, model_file: str | os.PathLike, *, threads: int | None = None, weights: str = ""):
        model_file = Path(model_file)
        if not model_file.is_file():
            raise GenerationError(f"llama.cpp: model file missing: {model_file}")
        self.model_file = model_file
        #: What the weights are when they are not the member's file as given (``served_gguf``).
        self.weights = weights
        try:
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as exc:
            raise GenerationError(f"llama.cpp: the llama-cpp-python bindings are not installed ({exc})") from None
        from modeling.ml.devices import cpu_cores

        self.threads = threads
        try:
            # Only the model and its vocabulary are used from this object (a small context is made
            # to satisfy the constructor); each call makes a context sized for its batch.
            self.llm = Llama(model_path=str(model_file), n_ctx=self.CONTEXT_STEP, n_batch=self.CONTEXT_STEP,
                             n_threads=threads or cpu_cores(), verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise GenerationError(f"llama.cpp could not load {model_file.name}: {exc}") from None
        # Freed before the interpreter tears down the bindings (else Llama.__del__ prints a
        # TypeError at every worker exit).
        import atexit

        atexit.register(self.llm.close)
        self.model = self.llm._model
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise GenerationError(f"llama.cpp: {model_file.name} has no chat template (tokenizer.chat_template)")
        eos, bos = self.llm.token_eos(), self.llm.token_bos()
        self.formatter = Jinja2ChatFormatter(
            template=template, eos_token=self.model.token_get_text(eos) if eos != -1 else "",
            bos_token=self.model.token_get_text(bos) if bos != -1 else "", add_generation_prompt=True,
        )
        self.n_ctx_train = self.model.n_ctx_train()

    def piece(self, token: int) -> bytes:
        """A token's bytes (the bindings' own ``token_to_piece`` returns its whole 32-byte buffer)."""
        import ctypes

        import llama_cpp

        size = 64
        while True:
            buffer = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(self.model.vocab, token, buffer, size, 0, False)
            if n >= 0:
                return buffer.raw[:n]
            size = -n  # too small: llama.cpp says how large it must be

    def prompt_tokens(self, messages: list[dict]) -> list[int]:
        try:
            text = self.formatter(messages=messages).prompt
        except Exception as exc:  # the model's own Jinja template, on outside messages
            raise GenerationError(f"llama.cpp: the model's chat template failed on this conversation: {type(exc).__name__}: {exc}") from None
        # The template writes its own special tokens (<|im_start|>...): parse them, add no BOS.
        tokens = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if len(tokens) + 1 > self.n_ctx_train:
            raise GenerationError(f"llama.cpp: a prompt of {len(tokens)} tokens does not fit the model's context ({self.n_ctx_train})")
        return tokens

    def _threads(self) -> int:
        from modeling.ml.devices import free_cpu_cores

        return self.threads or free_cpu_cores()

    def _decode(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams]) -> Iterator[tuple[int, int | str]]:
        """Generate for every prompt at once; yields ``(sequence, token)`` as tokens are sampled
        and ``(sequence, finish_reason)`` when a sequence ends: "stop" (end of generation) or
        "length" (max_new_tokens, or the sequence's context is full). ``params`` is one setting
        for all, or one per prompt (the two members of a live turn sample at their own
        temperatures in one batch)."""
        import llama_cpp
        from llama_cpp import _internals as internals

        _quiet_llamacpp()  # after any Llama(verbose=False), which sets its own level
        each = list(params) if isinstance(params, list) else [params] * len(prompts)
        longest = max(len(p) for p in prompts)
        most_new = max(p.max_new_tokens for p in each)
        per_sequence = min(self.n_ctx_train, -(-(longest + most_new) // self.CONTEXT_STEP) * self.CONTEXT_STEP)
        n_batch = max(self.PROMPT_BATCH, len(prompts))
        threads = self._threads()
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = per_sequence * len(prompts)
        cparams.n_batch = cparams.n_ubatch = n_batch
        cparams.n_seq_max = len(prompts)
        # One KV cache for all sequences (each attends to its own cells by the mask): ~10% more
        # tokens/s than a stream per sequence for 8 and for 32 sequences on this CPU, and a
        # copied prefix is shared, not duplicated.
        cparams.kv_unified = True
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.no_perf = True
        ctx = internals.LlamaContext(model=self.model, params=cparams, verbose=False)
        batch = internals.LlamaBatch(n_tokens=n_batch, embd=0, n_seq_max=len(prompts), verbose=False)
        samplers = []
        try:
            for i, p in enumerate(each):
                sampler = internals.LlamaSampler()
                if p.temperature > 0:
                    # top-k, temperature, then top-p on the tempered distribution: transformers'
                    # warpers (temperature before top-k there; the k kept are the same either way)
                    if p.top_k > 0:
                        sampler.add_top_k(p.top_k)
                    sampler.add_temp(p.temperature)
                    sampler.add_top_p(p.top_p, 1)
                    seed = random.getrandbits(32) if p.seed is None else (p.seed * 7919 + i) & 0xFFFFFFFF
                    sampler.add_dist(seed)
                else:
                    sampler.add_greedy()
                samplers.append(sampler)

            def put(j: int, token: int, position: int, sequence: int, logits: bool) -> None:
                b = batch.batch
                b.token[j], b.pos[j], b.n_seq_id[j], b.logits[j] = token, position, 1, logits
                b.seq_id[j][0] = sequence

            # The prompts are read before any new token: distinct prompts once each (sequences
            # with the same prompt, a live turn's two members, copy the first one's cache), their
            # common prefix (the chat template's system turn, on every prompt of a sampling batch)
            # once for all, copied to each sequence; and the rest packed into as few decode calls
            # of n_batch tokens as they fill, each token tagged with its sequence. A prompt's first
            # new token is sampled from its last position, in whichever call holds it.
            last, positions = [0] * len(prompts), [0] * len(prompts)
            same: dict[tuple[int, ...], list[int]] = {}
            for i, prompt in enumerate(prompts):
                same.setdefault(tuple(prompt), []).append(i)
            distinct = [group[0] for group in same.values()]

            def feed(tokens: list[tuple[int, int]]) -> None:
                """Decode ``(sequence, position)`` prompt tokens; sample where a prompt ends."""
                for start in range(0, len(tokens), n_batch):
                    chunk = tokens[start : start + n_batch]
                    batch.reset()
                    ends = []
                    for j, (first, position) in enumerate(chunk):
                        is_last = position == len(prompts[first]) - 1
                        put(j, prompts[first][position], position, first, is_last)
                        if is_last:
                            ends.append((first, j))
                    batch.batch.n_tokens = len(chunk)
                    ctx.decode(batch)
                    for first, j in ends:
                        for i in same[tuple(prompts[first])]:
                            if i != first:
                                ctx.kv_cache_seq_cp(first, i, -1, -1)
                            last[i] = samplers[i].sample(ctx, j)
                            positions[i] = len(prompts[i])

            shared = common_prefix(prompts[f] for f in distinct) if len(distinct) > 1 else 0
            # Every prompt keeps at least its last token to read, where its first sample comes from.
            shared = min(shared, min(len(prompts[f]) for f in distinct) - 1)
            if shared > 0:
                feed([(distinct[0], position) for position in range(shared)])
                for f in distinct[1:]:
                    ctx.kv_cache_seq_cp(distinct[0], f, -1, -1)
            feed([(f, position) for f in distinct for position in range(shared, len(prompts[f]))])
            active = list(range(len(prompts)))
            produced = [0] * len(prompts)
            while active:
                still = []
                for i in active:
                    token = last[i]
                    if llama_cpp.llama_vocab_is_eog(self.model.vocab, token):
                        yield i, "stop"
                        continue
                    produced[i] += 1
                    yield i, token
                    if produced[i] >= each[i].max_new_tokens or positions[i] + 1 >= per_sequence:
                        yield i, "length"
                        continue
                    still.append(i)
                active = still
                if not active:
                    break
                batch.reset()
                for j, i in enumerate(active):
                    put(j, last[i], positions[i], i, True)
                    positions[i] += 1
                batch.batch.n_tokens = len(active)
                ctx.decode(batch)
                for j, i in enumerate(active):
                    last[i] = samplers[i].sample(ctx, j)
        finally:
            for sampler in samplers:
                sampler.close()
            batch.close()
            ctx.close()

    def generate(self, conversations: list[list[dict]], params: SamplingParams) -> list[Generation]:
        import codecs

        started = time.perf_counter()
        # A conversation the template refuses or that does not fit fails alone; the rest decode.
        prompts: dict[int, list[int]] = {}
        errors: dict[int, str] = {}
        for i, messages in enumerate(conversations):
            try:
                prompts[i] = self.prompt_tokens(messages)
            except GenerationError as exc:
                errors[i] = str(exc)
        order = list(prompts)
        tokens: dict[int, list[int]] = {i: [] for i in order}
        finish: dict[int, str] = {}
        first_at: float | None = None
        if order:
            for sequence, item in self._decode([prompts[i] for i in order], params):
                if isinstance(item, str):
                    finish[order[sequence]] = item
                    continue
                first_at = first_at or time.perf_counter()
                tokens[order[sequence]].append(item)
        latency_ms = int((time.perf_counter() - started) * 1000)
        results = []
        for i in range(len(conversations)):
            if i in errors:
                results.append(Generation("", 0, 0, "error", latency_ms, error=errors[i], engine=self.engine, queue_ms=0))
                continue
            text = codecs.decode(b"".join(self.piece(t) for t in tokens[i]), "utf-8", errors="replace")
            results.append(
                Generation(
                    text=text.strip(), prompt_tokens=len(prompts[i]), completion_tokens=len(tokens[i]),
                    finish_reason=finish.get(i, "length"), latency_ms=latency_ms, engine=self.engine, queue_ms=0,
                    first_token_ms=int((first_at - started) * 1000) if first_at else None,
                )
            )
        return results

    def stream_batch(self, conversations: list[list[dict]], params: list[SamplingParams]) -> Iterator[tuple[int, str | Generation]]:
        """Several answers streamed together as parallel sequences of one context, each with its
        own sampling settings: yields ``(i, text delta)`` as tokens come and ``(i, Generation)``
        once answer ``i`` is done (its own latency and first token). One ``llama_decode`` per
        step for all of them, where two streams would take a step each: the two answers of a
        live turn from one model cost about one."""
        import codecs

        started = time.perf_counter()
        prompts: dict[int, list[int]] = {}
        for i, messages in enumerate(conversations):
            try:
                prompts[i] = self.prompt_tokens(messages)
            except GenerationError as exc:  # this answer fails alone
                yield i, Generation("", 0, 0, "error", 0, error=str(exc), engine=self.engine, queue_ms=0)
        order = list(prompts)
        if not order:
            return
        decoders = {i: codecs.getincrementaldecoder("utf-8")(errors="replace") for i in order}
        parts: dict[int, list[str]] = {i: [] for i in order}
        counts = dict.fromkeys(order, 0)
        first: dict[int, float] = {}
        for sequence, item in self._decode([prompts[i] for i in order], [params[i] for i in order]):
            i = order[sequence]
            if isinstance(item, str):
                tail = decoders[i].decode(b"", final=True)
                if tail:
                    parts[i].append(tail)
                    yield i, tail
                now = time.perf_counter()
                yield i, Generation(
                    text="".join(parts[i]).strip(), prompt_tokens=len(prompts[i]), completion_tokens=counts[i],
                    finish_reason=item, latency_ms=int((now - started) * 1000), engine=self.engine, queue_ms=0,
                    first_token_ms=int((first[i] - started) * 1000) if i in first else None,
                )
                continue
            counts[i] += 1
            text = decoders[i].decode(self.piece(item))
            if text:
                first.setdefault(i, time.perf_counter())
                parts[i].append(text)
                yield i, text

    def stream(self, messages: list[dict], params: SamplingParams) -> Stream:
        import codecs

        started = time.perf_counter()

        def deltas():
            prompt = self.prompt_tokens(messages)
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span tokens
            count, finish = 0, "length"
            for _, token in self._decode([prompt], params):
                if isinstance(token, str):
                    finish = token
                    break
                count += 1
                text = decoder.decode(self.piece(token))
                if text:
                    yield text
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail
            return count, len(prompt), finish

        return Stream(deltas(), engine=self.engine, started=started)


# --- choosing the engine, and the per-process cache -------------------------------------------


def engine_planned(*, kind: str, gguf_file: str, engine: str = "auto", base_gguf: str = "") -> str:
    """The engine a member is meant to run on, from its settings alone (what pages show; the
    worker's ``engine_for`` also checks what is installed and whether CUDA is there): endpoints
    are "openai"; "auto" is llama.cpp for a GGUF file and for a round's checkpoint whose base is
    one (converted to GGUF once), hf for anything else."""
    if kind == "endpoint":
        return "openai"
    if engine != "auto":
        return engine
    # vLLM is chosen by the worker when it has CUDA and vLLM (engine_for); pages say the CPU plan.
    return "llama.cpp" if gguf_file or (kind == "checkpoint" and base_gguf) else "hf"


def llamacpp_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def engine_for(spec: ModelSpec) -> str:
    """The engine this worker runs ``spec`` on; a clear GenerationError when the member's choice
    cannot run here. "auto" takes llama.cpp for GGUF (and checkpoints of a GGUF base) on CPU when
    the bindings are installed; with CUDA, transformers on the GPU (this build of llama.cpp is
    CPU-only)."""
    if spec.kind == "endpoint":
        return "openai"
    if spec.engine not in ENGINES:
        raise GenerationError(f"unknown engine {spec.engine!r} (one of {', '.join(ENGINES)})")
    from modeling.ml.devices import cuda_available
    from modeling.ml.serving import vllm_installed

    base_gguf = spec.base.gguf_file if spec.base is not None else ""
    planned = engine_planned(kind=spec.kind, gguf_file=spec.gguf_file, engine=spec.engine, base_gguf=base_gguf)
    if spec.engine == "vllm":
        if spec.gguf_file:
            raise GenerationError("vllm serves model directories and round checkpoints here, not GGUF files: choose llama.cpp or auto")
        if not (cuda_available() and vllm_installed()):
            raise GenerationError("vllm needs CUDA and vLLM on this worker (pip install -r requirements-gpu.txt, or ARBITER_VLLM_COMMAND)")
        return "vllm"
    if spec.engine == "auto" and not spec.gguf_file and cuda_available() and vllm_installed():
        return "vllm"  # a model directory or a checkpoint, on a GPU host with vLLM
    if planned == "llama.cpp":
        if not (spec.gguf_file or (spec.kind == "checkpoint" and base_gguf)):
            raise GenerationError("llama.cpp serves GGUF files; this member is a model directory: choose hf or auto")
        if not llamacpp_installed():
            if spec.engine == "auto":
                return "hf"
            raise GenerationError("llama.cpp: the llama-cpp-python bindings are not installed on this worker (make install builds them)")
        if spec.engine == "auto" and cuda_available():
            return "hf"
    return planned


@lru_cache(maxsize=4)
def _cached_local(spec: ModelSpec, cache_root: str) -> LocalBackend:
    return LocalBackend(spec, cache_root)


def _load_hf(spec: ModelSpec, cache_root: str) -> LocalBackend:
    """``_cached_local``, with a load failure said as the engine's: which engine, why."""
    try:
        return _cached_local(spec, cache_root)
    except GenerationError as exc:
        raise GenerationError(f"hf: {exc}") from None
    except (OSError, ValueError, RuntimeError, KeyError, ImportError) as exc:
        raise GenerationError(f"hf could not load {spec.name or spec.model_path}: {type(exc).__name__}: {exc}") from None


@lru_cache(maxsize=4)
def _cached_llamacpp(model_file: str, weights: str = "") -> LlamaCppBackend:
    return LlamaCppBackend(model_file, weights=weights)


#: GGUF weight types llama.cpp serves from a Q8_0 copy (``served_gguf``). This build of llama.cpp
#: has repacked AVX2 kernels for Q4_0 and Q8_0 and none for Q4_1 (the packaged SmolLM2's type),
#: and Q8_0 (one byte per weight, a scale per 32) holds Q4_1's 16 levels per block within
#: rounding. bench/engines.py measures both files: tokens/s, and how far each one's next-token
#: distributions are from the exact weights (mean KL 0.0045 for the copy, 0.0030 for Q4_1's own
#: kernels). Q4_0 would be faster still but rounds every weight a second time (perplexity +23% on
#: HH dialogues): not used.
REQUANTIZE_TO_Q8_0 = frozenset({"Q4_1"})


def gguf_file_type(model_file: str | os.PathLike) -> str:
    """A GGUF file's weight type as llama.cpp names it ("Q4_1", "Q8_0", ...; ``general.file_type``),
    read by loading only its vocabulary and metadata (~0.1 s; once per file version and process);
    "" when it has none or cannot load."""
    try:
        stat = Path(model_file).stat()
    except OSError:
        return ""
    return _file_type(str(Path(model_file).resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=16)
def _file_type(model_file: str, size: int, mtime_ns: int) -> str:
    import ctypes

    import llama_cpp

    _quiet_llamacpp()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(model_file).encode(), params)
    if not model:
        return ""
    try:
        value = ctypes.create_string_buffer(32)
        if llama_cpp.llama_model_meta_val_str(model, b"general.file_type", value, len(value)) < 0:
            return ""
    finally:
        llama_cpp.llama_model_free(model)
    names = {getattr(llama_cpp, n): n.removeprefix("LLAMA_FTYPE_MOSTLY_") for n in dir(llama_cpp) if n.startswith("LLAMA_FTYPE_MOSTLY_")}
    try:
        return names.get(int(value.value), "")
    except ValueError:
        return ""


def served_gguf(model_file: str | os.PathLike, cache_root: str | os.PathLike) -> tuple[Path, str]:
    """The GGUF file llama.cpp serves for ``model_file``, and what it is when it is a copy.

    A file of a type in ``REQUANTIZE_TO_Q8_0`` (``gguf_file_type``) is served from a Q8_0 copy,
    written once beside the HF conversion in the model cache (a temporary file renamed into
    place: a crash never leaves half a file to load). ``ARBITER_LLAMACPP_REQUANTIZE=off`` serves
    every file as shipped. When the copy cannot be made, the file is served as shipped."""
    model_file = Path(model_file)
    if os.environ.get("ARBITER_LLAMACPP_REQUANTIZE", "q8_0").strip().lower() in ("off", "0", "false", "no"):
        return model_file, ""
    if not model_file.is_file() or (kind := gguf_file_type(model_file)) not in REQUANTIZE_TO_Q8_0:
        return model_file, ""  # a file that cannot load: LlamaCppBackend says why when it loads it
    target = gguf_cache_dir(str(model_file.parent), model_file.name, cache_root)
    target = target.with_name(target.name + ".Q8_0.gguf")
    weights = f"a Q8_0 copy of the {kind} file (no fast {kind} kernels in this llama.cpp build)"
    if target.is_file():
        return target, weights
    import ctypes

    import llama_cpp

    from modeling.ml.devices import cpu_cores

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    params.allow_requantize = True
    params.nthread = cpu_cores()
    try:
        failed = llama_cpp.llama_model_quantize(str(model_file).encode(), str(tmp).encode(), ctypes.byref(params))
        if failed:
            return model_file, ""
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target, weights


def _checkpoint_gguf(spec: ModelSpec, cache_root: str | os.PathLike) -> Path:
    """A round checkpoint of a GGUF base, as GGUF beside the checkpoint (written on first use)."""
    from modeling.ml.gguf_export import GgufExportError, policy_gguf

    if spec.base is None or not spec.base.gguf_file:
        raise GenerationError("llama.cpp: this checkpoint's base is not a GGUF file to convert it like")
    try:
        return policy_gguf(spec.model_path, resolve_local_dir(spec.base, cache_root), Path(spec.base.model_path) / spec.base.gguf_file)
    except GgufExportError as exc:
        raise GenerationError(f"llama.cpp: the checkpoint cannot be converted to GGUF: {exc}") from None
    except (OSError, ValueError, KeyError) as exc:
        raise GenerationError(f"llama.cpp: converting the checkpoint to GGUF failed: {type(exc).__name__}: {exc}") from None


def _checkpoint_merged(spec: ModelSpec, cache_root: str | os.PathLike) -> Path:
    """A round checkpoint as one model directory (vLLM loads no LoRA-on-GGUF-base): a LoRA
    adapter is merged into its base once, into ``merged/`` beside it (written, then renamed)."""
    checkpoint = Path(spec.model_path)
    if not (checkpoint / "adapter_config.json").exists():
        return checkpoint
    target = checkpoint / "merged"
    if (target / "config.json").exists():
        return target
    if spec.base is None:
        raise GenerationError(f"checkpoint {checkpoint} is a LoRA adapter but has no base model")
    from transformers import AutoTokenizer

    from modeling.ml.gguf_export import merged_policy

    base_dir = resolve_local_dir(spec.base, cache_root)
    tmp = checkpoint / f"merged.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    merged_policy(checkpoint, base_dir).save_pretrained(tmp)
    tokenizer_dir = checkpoint if (checkpoint / "tokenizer_config.json").exists() else base_dir
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def release_models() -> None:
    """Drop this process's loaded models and stop its vLLM servers (before a round trains on the
    same device); the next answer loads them again."""
    from modeling.ml.serving import stop_servers

    _cached_local.cache_clear()
    _cached_llamacpp.cache_clear()
    stop_servers()


def _fast_engine(engine: str, spec: ModelSpec, cache_root: str | os.PathLike) -> Backend:
    """The vllm or llama.cpp backend for ``spec`` (a checkpoint is merged or converted first)."""
    if engine == "vllm":
        from modeling.ml.serving import server_for

        model_dir = _checkpoint_merged(spec, cache_root) if spec.kind == "checkpoint" else Path(spec.model_path)
        return server_for(model_dir).backend(spec)
    if spec.kind == "checkpoint":
        return _cached_llamacpp(str(_checkpoint_gguf(spec, cache_root)))  # written as Q8_0 already
    model_file, weights = served_gguf(Path(spec.model_path) / spec.gguf_file, cache_root)
    return _cached_llamacpp(str(model_file), weights)


def backend_for(spec: ModelSpec, cache_root: str | os.PathLike) -> Backend:
    """The backend for a member; local models are loaded once per process and reused. With
    "auto", what vllm or llama.cpp cannot serve is served by hf, and the backend's ``note`` says
    why (shown with the member's test); a member that names its engine gets that engine or an
    error saying why not."""
    if spec.kind == "endpoint":
        return EndpointBackend(spec)
    if spec.kind not in ("local", "checkpoint"):
        raise GenerationError(f"unknown member kind {spec.kind!r}")
    engine = engine_for(spec)
    if engine in ("vllm", "llama.cpp"):
        try:
            return _fast_engine(engine, spec, cache_root)
        except GenerationError as exc:
            if spec.engine != "auto":
                raise
            try:
                backend = _load_hf(spec, str(cache_root))
            except GenerationError as hf_exc:
                raise GenerationError(f"{exc}; and {hf_exc}") from None
            backend.note = f"{exc}; served by hf instead"
            return backend
    backend = _load_hf(spec, str(cache_root))
    if spec.engine == "auto" and spec.gguf_file and not llamacpp_installed():
        backend.note = "llama.cpp bindings not installed on this worker; served by hf instead"
    return backend
