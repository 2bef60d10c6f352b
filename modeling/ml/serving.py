"""vLLM for local models on a GPU: a managed ``vllm serve`` subprocess per model, used through
the OpenAI-compatible client (``EndpointBackend``), so it streams, retries and bounds replies like
any endpoint member.

Why a subprocess and not vLLM's in-process engine: the ``gpu`` worker also trains rounds on the
same GPU. An in-process engine keeps its share of GPU memory (``gpu_memory_utilization``) and its
CUDA context until the worker exits; a server process is stopped before a round trains
(``stop_servers``, called by the round task) and gives every byte back. It also keeps vLLM's own
dependencies and crashes out of the worker, and is the same server an admin can run by hand and
register as an endpoint member.

The command is ``ARBITER_VLLM_COMMAND`` (default ``vllm serve``), followed by the model directory
and the flags below; a server that exits or does not answer ``/v1/models`` within
``ARBITER_VLLM_START_TIMEOUT`` seconds (default 600: a first start compiles kernels) is a
GenerationError with the last lines it printed.

Plain Python, no Django; nothing here imports vllm.
"""

from __future__ import annotations

import atexit
import json
import os
import shlex
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from modeling.ml.generation import EndpointBackend, GenerationError, ModelSpec

#: The name each managed server gives its model (the client asks for it by name).
SERVED_NAME = "arbiter-local"
_servers: dict[str, "ManagedServer"] = {}


def vllm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None or bool(os.environ.get("ARBITER_VLLM_COMMAND"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ManagedServer:
    """One ``vllm serve`` process for one model directory, on a loopback port."""

    def __init__(self, model_dir: str | os.PathLike, *, command: str | None = None, start_timeout_s: float | None = None):
        self.model_dir = str(model_dir)
        self.command = shlex.split(command or os.environ.get("ARBITER_VLLM_COMMAND") or "vllm serve")
        self.start_timeout_s = start_timeout_s or float(os.environ.get("ARBITER_VLLM_START_TIMEOUT", "600"))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = tempfile.NamedTemporaryFile(prefix="vllm-", suffix=".log", delete=False)
        argv = [*self.command, self.model_dir, "--host", "127.0.0.1", "--port", str(self.port),
                "--served-model-name", SERVED_NAME, "--gpu-memory-utilization", os.environ.get("ARBITER_VLLM_GPU_MEMORY", "0.5")]
        try:
            self.process = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise GenerationError(f"vllm: cannot start {' '.join(self.command)}: {exc}") from None
        self._wait_ready()

    def _tail(self) -> str:
        return Path(self.log.name).read_bytes()[-1500:].decode(errors="replace").strip()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self._tail()
                self.stop()
                raise GenerationError(f"vllm: the server for {self.model_dir} exited with {self.process.returncode}: {tail}")
            try:
                with urllib.request.urlopen(self.url + "/models", timeout=2) as answer:
                    models = json.loads(answer.read(2**20))
                if any(m.get("id") == SERVED_NAME for m in models.get("data", [])):
                    return
            except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError, AttributeError):
                pass
            time.sleep(0.5)
        tail = self._tail()
        self.stop()
        raise GenerationError(f"vllm: the server for {self.model_dir} did not answer in {self.start_timeout_s:.0f} s: {tail}")

    def backend(self, spec: ModelSpec) -> EndpointBackend:
        backend = EndpointBackend(ModelSpec(kind="endpoint", name=spec.name, base_url=self.url, endpoint_model=SERVED_NAME,
                                            timeout_s=spec.timeout_s, max_retries=spec.max_retries))
        backend.engine = "vllm"
        backend.sends_top_k = True  # vLLM's OpenAI server takes top_k beside the API's fields
        return backend

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


def server_for(model_dir: str | os.PathLike) -> ManagedServer:
    """The running server for ``model_dir``, started on first use (and again if it died)."""
    key = str(Path(model_dir).resolve())
    server = _servers.get(key)
    if server is None or not server.alive():
        if server is not None:
            server.stop()
        server = _servers[key] = ManagedServer(key)
    return server


def stop_servers() -> int:
    """Stop every managed server (before a round trains on the GPU, and at exit); how many ran."""
    count = 0
    while _servers:
        _, server = _servers.popitem()
        count += server.alive()
        server.stop()
    return count


atexit.register(stop_servers)
