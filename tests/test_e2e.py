"""`make e2e` in small: the whole loop on the embedded stack with real processes (scripts/e2e.py).

One test, a few minutes on two CPU cores: SmolLM2 answers four MT-Bench prompts, three labelers
label every pair through the API, a one-step round trains the RM and the DPO policy, the labelers
judge its head-to-head pairs (new vs previous policy), the policy answers in the next pass, and the export trains one step of TRL. Every count is read back from
the stack's own database.
"""

import json
import math
import os
from pathlib import Path

import pytest
from django.conf import settings

from scripts.e2e import LABELERS, run_e2e

pytestmark = pytest.mark.slow

PROMPTS = 4
STAGES = ["stack", "users", "import", "committee", "sampling", "labeling", "round", "human-eval", "policy", "sampling-2", "export", "trl", "live"]


def test_the_whole_loop_runs_on_the_embedded_stack_and_its_export_trains_in_trl(tmp_path):
    # Progress goes to stdout: pytest shows it (with the stack's log tail) when the test fails.
    result = run_e2e(
        tmp_path / "e2e", prompts=PROMPTS, max_new_tokens=24, rm_steps=1, dpo_steps=1, batch_size=2, max_length=256,
        heldout_percent=31,  # of the first four MT-Bench questions, holds out one (by its content hash)
        # two unlabelled prompts for the head-to-head, 24 tokens: pairs the labelers can tell apart
        eval_prompts=2, eval_max_new_tokens=24, edit_every=2,
        # the GGUF conversion cache the rest of the suite uses: convert SmolLM2 once per run
        model_cache=Path(settings.ARTIFACTS_DIR) / "models",
        out=print,
    )
    if os.environ.get("ARBITER_TEST_OUTPUT"):
        Path(os.environ["ARBITER_TEST_OUTPUT"], "e2e.json").write_text(json.dumps(result, indent=2, default=str))
    stages = {s["name"]: s for s in result["stages"]}
    assert result["ok"] and list(stages) == STAGES
    counts = {name: s["counts"] for name, s in stages.items()}
    details = {name: s["details"] for name, s in stages.items()}

    assert details["stack"]["workers"] == 3 and counts["stack"] == dict.fromkeys(counts["stack"], 0)
    assert details["users"]["users"] == 5
    assert counts["import"]["prompts"] == details["import"]["created"] == 80  # the MT-Bench file
    assert counts["committee"]["members"] == 2

    sampled = counts["sampling"]
    assert sampled["responses"] == 2 * PROMPTS and details["sampling"]["prompts_done"] == PROMPTS
    assert 1 <= sampled["comparisons"] == details["sampling"]["pairs"] <= PROMPTS

    labeled = counts["labeling"]
    assert labeled["judgments"] == len(LABELERS) * sampled["comparisons"]  # every pair, by all three
    assert labeled["edits"] == details["labeling"]["edited"] >= 1
    pairs = labeled["judgments"] + 2 * labeled["edits"]  # edited > chosen > rejected: two more pairs per edit

    trained = details["round"]
    assert trained["rm_rows"] + trained["heldout_rows"] == pairs and trained["heldout_rows"] > 0
    assert trained["rm_steps"] == 1 and trained["dpo_steps"] == 1 and trained["dpo_rows"] >= 1
    assert trained["eval_prompts"] == 2 and 0 <= trained["win_rate"] <= 1
    assert counts["round"]["members"] == 3  # the new policy joined
    judged = details["human-eval"]  # the head-to-head's pairs, judged by the labelers
    assert 1 <= judged["pairs"] <= 2 and counts["round"]["comparisons"] == sampled["comparisons"] + judged["pairs"]
    assert counts["round"]["responses"] == 2 * PROMPTS + 2 * judged["pairs"]
    assert counts["human-eval"]["judgments"] == labeled["judgments"] + judged["labels"] == labeled["judgments"] + 3 * judged["pairs"]
    assert 0 <= judged["human_win_rate"] <= 1 and judged["human_ci95"][0] <= judged["human_win_rate"] <= judged["human_ci95"][1]
    assert details["policy"]["policy"] == "e2e-round-1" and details["policy"]["active"] == 3

    assert details["sampling-2"]["prompts_done"] == PROMPTS and details["sampling-2"]["by_new_policy"] >= 1
    assert counts["sampling-2"]["responses"] == 4 * PROMPTS + 2 * judged["pairs"]
    assert counts["sampling-2"]["comparisons"] == sampled["comparisons"] + judged["pairs"] + details["sampling-2"]["pairs"]

    exported = details["export"]  # evaluation labels stay out of an export unless asked
    assert exported["rows"] == pairs and exported["edited_chosen"] == exported["edited_rejected"] == labeled["edits"]
    learned = details["trl"]
    assert learned["rows"] == pairs and learned["reward_steps"] == learned["dpo_steps"] == 1
    assert math.isfinite(learned["reward_loss"]) and math.isfinite(learned["dpo_loss"])

    # a labeler's live dialogue of two turns: both answers seen growing, the second turn from the edit
    live = details["live"]
    assert live["turns"] == 2 and all(int(n) >= 1 for n in live["partial_states"].split("/"))
    assert counts["live"]["comparisons"] == counts["trl"]["comparisons"] + 2
    assert counts["live"]["judgments"] == counts["trl"]["judgments"] + 2 and counts["live"]["edits"] == counts["trl"]["edits"] + 1

    # every process of the stack is gone
    assert result["stack_exit_code"] == 0
    with pytest.raises(ProcessLookupError):
        os.killpg(result["stack_pid"], 0)
