"""Weight averaging in a round (``config["averaging"]``; the averaging itself is
modeling/ml/averaging.py):

- ``rm_models`` = M > 1: the RM step trains M reward models from the same base with seeds
  seed, seed+1, ... and keeps their soup: ``uniform`` (WARM) or ``greedy`` (model soups: added
  best-first while accuracy on a validation split holds). The validation split is
  ``rm_validation_percent`` of the training pairs, by prompt, never the held-out test split.
- ``policy_previous`` = K > 0: the DPO step averages the new policy with the K latest policies of
  earlier rounds grown from the same base model (Llama 3 averaged models across runs).

Both record what they did in the step's metrics: each RM's held-out and validation accuracy, the
soup's, the mean and the best single model's; the policies averaged.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import replace
from pathlib import Path

from modeling.models import CommitteeMember, MemberKind, Round, RoundState


def validation_split(rows: list[dict], percent: int) -> tuple[list[dict], list[dict]]:
    """(training, validation) by a hash of each row's prompt, so one prompt's pairs stay together."""
    def bucket(row: dict) -> int:
        key = row.get("prompt_hash") or repr(row["prompt"])
        return int(hashlib.sha256(f"validation:{key}".encode()).hexdigest()[:8], 16) % 100

    train = [r for r in rows if bucket(r) >= percent]
    validation = [r for r in rows if bucket(r) < percent]
    return train, validation


def rm_ensemble(*, train_one, rows: list[dict], heldout: list[dict], output_dir: Path, config, averaging: dict, progress) -> tuple:
    """Train ``averaging["rm_models"]`` reward models with ``train_one(rows, output_dir, config)``
    and write their soup into ``output_dir``. Returns (the soup's result, the averaging metrics)."""
    from modeling.ml.averaging import average_checkpoints, greedy_soup
    from modeling.ml.evaluation import evaluate_reward_model

    models, soup_kind = int(averaging["rm_models"]), averaging["rm_soup"]
    train_rows, validation = (rows, [])
    if soup_kind == "greedy":
        train_rows, validation = validation_split(rows, int(averaging["rm_validation_percent"]))
        if not validation or not train_rows:
            soup_kind = "uniform"  # too few prompts to hold some out: say so in the metrics
    members_dir = output_dir.with_name(output_dir.name + ".members")
    shutil.rmtree(members_dir, ignore_errors=True)
    results, dirs = [], []
    for i in range(models):
        progress({"phase": f"reward model {i + 1} of {models}", "done": 0, "total": len(train_rows), "unit": "pairs",
                  "log": f"training reward model {i + 1} of {models} (seed {config.seed + i})"})
        member_dir = members_dir / f"rm-{i + 1}"
        results.append(train_one(train_rows, member_dir, replace(config, seed=config.seed + i)))
        dirs.append(member_dir)
    max_length = results[0].max_length
    scores = {}

    def validation_accuracy(model_dir: Path) -> float:
        if model_dir.name not in scores:
            scores[model_dir.name] = evaluate_reward_model(model_dir=str(model_dir), rows=validation, max_length=max_length)["accuracy"]
        return scores[model_dir.name]

    progress({"phase": f"{soup_kind} soup", "done": 0, "total": models, "unit": "models",
              "log": f"averaging {models} reward models ({soup_kind} soup)"})
    if soup_kind == "greedy":
        soup = greedy_soup(dirs, validation_accuracy, members_dir / "soup-work")
        chosen = soup["chosen"]
        for item in Path(soup["soup_dir"]).iterdir():
            shutil.move(str(item), output_dir / item.name)
    else:
        average_checkpoints(dirs, output_dir)
        chosen = [d.name for d in dirs]
    soup_heldout = evaluate_reward_model(model_dir=str(output_dir), rows=heldout, max_length=max_length)
    singles = [r.heldout.get("accuracy") for r in results]
    known = [a for a in singles if a is not None]
    metrics = {
        "models": models, "soup": soup_kind, "chosen": chosen,
        "validation_pairs": len(validation), "train_pairs": len(train_rows),
        "members": [
            {"name": d.name, "seed": config.seed + i, "heldout_accuracy": singles[i], "validation_accuracy": scores.get(d.name)}
            for i, d in enumerate(dirs)
        ],
        "soup_heldout_accuracy": soup_heldout.get("accuracy"),
        "mean_member_accuracy": round(sum(known) / len(known), 4) if known else None,
        "best_member_accuracy": max(known) if known else None,
    }
    shutil.rmtree(members_dir, ignore_errors=True)
    soup_result = replace(results[0], output_dir=str(output_dir), heldout=soup_heldout,
                          steps=sum(r.steps for r in results), seconds=round(sum(r.seconds for r in results), 2))
    return soup_result, metrics


def _root(member: CommitteeMember) -> int:
    """The base model a member grew from (a checkpoint's base, its base's base, ...)."""
    seen = set()
    while member.base_member_id and member.pk not in seen:
        seen.add(member.pk)
        member = member.base_member
    return member.pk


def previous_policies(round_: Round, start: CommitteeMember, count: int) -> list[CommitteeMember]:
    """The ``count`` latest policies of this project's earlier successful rounds grown from the
    same base model as ``start`` (whether or not they joined the committee) whose folders exist."""
    if count <= 0:
        return []
    root = _root(start)
    found = []
    candidates = (
        CommitteeMember.objects.filter(kind=MemberKind.CHECKPOINT, source_round__project=round_.project,
                                       source_round__state=RoundState.SUCCEEDED, source_round__number__lt=round_.number)
        .select_related("base_member").order_by("-source_round__number")
    )
    for member in candidates:
        if _root(member) == root and Path(member.model_path).is_dir():
            found.append(member)
        if len(found) == count:
            break
    return found


def policy_average(policy_dir: Path, previous: list[CommitteeMember]) -> dict:
    """Replace the new policy in ``policy_dir`` by the uniform average of it and ``previous``."""
    from modeling.ml.averaging import average_checkpoints

    averaged = policy_dir.with_name(policy_dir.name + ".averaged")
    shutil.rmtree(averaged, ignore_errors=True)
    done = average_checkpoints([policy_dir, *(Path(m.model_path) for m in previous)], averaged)
    adapter = policy_dir / "adapter"
    if adapter.is_dir():  # the adapter is this round's alone: keep it beside the average
        shutil.move(str(adapter), averaged / "adapter")
    shutil.rmtree(policy_dir)
    averaged.rename(policy_dir)
    return {"with": [m.name for m in previous], "models": done["models"], "seconds": done["seconds"]}
