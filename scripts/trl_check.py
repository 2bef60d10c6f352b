"""Load an exported file as TRL users do and train one step of each preference trainer on it."""

from __future__ import annotations

import sys
from pathlib import Path

from scripts.stack import ROOT, StackError


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
        raise StackError(f"the export lacks TRL columns {sorted(missing)}")
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
