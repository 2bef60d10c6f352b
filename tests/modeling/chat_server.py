"""A real OpenAI-compatible chat-completions server on loopback, for the endpoint client's tests."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatServer:
    """Answers POST /v1/chat/completions. ``fail_first`` answers 503 that many times first;
    ``status`` forces every answer's status (e.g. 401); ``answer(last_user_message)`` replaces the
    echo: its value is the message content (any JSON value), or bytes sent as the whole body.
    A request with ``stream: true`` gets server-sent events, a chunk per word of the answer, a
    usage chunk and ``[DONE]``; ``stream_body`` replaces that whole body (bytes) for hostile tests.
    ``log``: a file each request's body is appended to as a JSON line (for a server in another
    process, whose ``requests`` a test cannot read)."""

    def __init__(self, *, fail_first: int = 0, status: int = 200, api_key: str = "", answer=None, stream_body: bytes | None = None,
                 port: int = 0, models: tuple[str, ...] = (), log: str | None = None):
        self.requests: list[dict] = []
        self.fail_first, self.status, self.api_key, self.answer = fail_first, status, api_key, answer
        self.stream_body = stream_body
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                if log:
                    with open(log, "a") as f:
                        f.write(json.dumps(body) + "\n")
                if server.fail_first > 0:
                    server.fail_first -= 1
                    return self._send(503, {"error": "warming up"})
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self._send(401, {"error": "bad key"})
                if server.status != 200 or self.path != "/v1/chat/completions":
                    return self._send(server.status if server.status != 200 else 404, {"error": "no"})
                last = body["messages"][-1]["content"]
                text = f"echo ({len(body['messages'])} messages): {last}"
                if server.answer is not None:
                    text = server.answer(last)
                    if isinstance(text, bytes):
                        return self._send(200, text)
                if body.get("stream"):
                    return self._stream(text)
                self._send(200, {
                    "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 11, "completion_tokens": len(text.split()) if isinstance(text, str) else 1},
                })

            def do_GET(self):
                if self.path == "/v1/models":
                    return self._send(200, {"object": "list", "data": [{"id": name, "object": "model"} for name in models]})
                self._send(404, {"error": "no"})

            def _stream(self, text):
                if server.stream_body is not None:
                    events = server.stream_body
                else:
                    words = text.split(" ")
                    chunks = [{"choices": [{"delta": {"role": "assistant"}, "finish_reason": None}]}]
                    chunks += [{"choices": [{"delta": {"content": w if i == 0 else " " + w}, "finish_reason": None}]} for i, w in enumerate(words)]
                    chunks += [{"choices": [{"delta": {}, "finish_reason": "stop"}]},
                               {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": len(words)}}]
                    events = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                self.wfile.write(events)

            def _send(self, status, payload):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":
    # A stand-in for ``vllm serve MODEL_DIR --host H --port P --served-model-name N ...`` (the
    # managed-server tests point ARBITER_VLLM_COMMAND here): refuses a directory without
    # config.json as vLLM does, then answers as NAME with "MODEL_DIR's basename: echo", logging
    # each request's body to $CHAT_SERVER_LOG when it is set.
    import argparse
    import os
    import sys
    from pathlib import Path

    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--served-model-name")
    parser.add_argument("--gpu-memory-utilization")
    args = parser.parse_args()
    if not (Path(args.model) / "config.json").exists():
        print(f"ValueError: no config.json in {args.model}", flush=True)
        sys.exit(1)
    print("INFO: starting", flush=True)
    server = ChatServer(port=args.port, models=(args.served_model_name,), answer=lambda last: f"{Path(args.model).name}: {last}",
                        log=os.environ.get("CHAT_SERVER_LOG"))
    server.httpd.serve_forever()
