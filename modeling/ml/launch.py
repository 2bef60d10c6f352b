"""Entry point for training under ``accelerate launch`` (several GPUs, or hosts via DDP/FSDP/DeepSpeed):

    accelerate launch [--num_processes N ...] -m modeling.ml.launch {rm|dpo} job.json

``job.json`` names the inputs (rows as JSONL paths), the output folder and the TrainConfig; the
main process writes the result next to it as ``result.json``. Plain Python, no Django: the
round's step writes the job file, launches this, and reads the result.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path


def _read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def _report_to(path: Path):
    """Progress reports as JSON lines in ``path``, from the main process only; the round's worker
    relays them to the database while this runs."""

    def report(fields: dict) -> None:
        if int(os.environ.get("RANK", "0")) != 0:
            return
        with path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(fields) + "\n")

    return report


def main(argv: list[str]) -> int:
    from modeling.ml.training import TrainConfig, train_dpo, train_reward_model

    kind, job_path = argv
    job = json.loads(Path(job_path).read_text())
    progress = _report_to(Path(job_path).with_name("progress.jsonl"))
    config = TrainConfig(**job["config"])
    rows, heldout = _read_jsonl(job["rows"]), _read_jsonl(job["heldout"])
    if kind == "rm":
        result = train_reward_model(base_dir=job["model_dir"], rows=rows, heldout=heldout, output_dir=job["output_dir"], config=config,
                                    progress=progress)
    elif kind == "dpo":
        result = train_dpo(policy_dir=job["model_dir"], rows=rows, heldout=heldout, output_dir=job["output_dir"], config=config,
                           progress=progress)
    else:
        raise SystemExit(f"unknown job kind {kind!r}: use rm or dpo")
    if result is not None:  # only the main process returns a result
        Path(job_path).with_name("result.json").write_text(json.dumps(dataclasses.asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
