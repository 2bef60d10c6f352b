"""Exports load unchanged into TRL: one RewardTrainer, DPOTrainer, KTOTrainer and SFTTrainer step each."""

from pathlib import Path

import pytest
from django.conf import settings as django_settings

from annotation.services.exports import export_execute, export_start
from tests.annotation.test_exports import dataset  # noqa: F401 (the fixture)

pytestmark = pytest.mark.django_db


def exported(project, format):
    from datasets import load_dataset

    snapshot = export_execute(snapshot_id=export_start(project=project, format=format).pk)
    return load_dataset("json", data_files=str(Path(django_settings.ARTIFACTS_DIR) / snapshot.path))["train"]


def common(tmp_path):
    return {"output_dir": str(tmp_path / "out"), "max_steps": 1, "per_device_train_batch_size": 2, "report_to": "none",
            "save_strategy": "no", "use_cpu": True, "disable_tqdm": True}


@pytest.mark.parametrize("format", ["trl-preference", "trl-preference-text"])
def test_preference_exports_train_a_reward_model_and_a_dpo_policy(dataset, tiny_model_dir, tmp_path, format):  # noqa: F811
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

    rows = exported(dataset[0], format)
    assert "margin" in rows.column_names and len(rows) == 6
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rm = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    rm.config.pad_token_id = tokenizer.pad_token_id
    reward = RewardTrainer(model=rm, args=RewardConfig(**common(tmp_path), max_length=128), train_dataset=rows, processing_class=tokenizer)
    assert reward.train().global_step == 1
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    dpo = DPOTrainer(model=policy, ref_model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                     args=DPOConfig(**common(tmp_path), max_length=128), train_dataset=rows, processing_class=tokenizer)
    assert dpo.train().global_step == 1


def test_the_kto_export_trains_with_kto(dataset, tiny_model_dir, tmp_path):  # noqa: F811
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import KTOConfig, KTOTrainer

    rows = exported(dataset[0], "kto")
    assert set(rows.unique("label")) == {True, False}
    trainer = KTOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), ref_model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=KTOConfig(**common(tmp_path), max_length=128), train_dataset=rows,
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    assert trainer.train().global_step == 1


def test_the_sft_export_trains_with_sft(dataset, tiny_model_dir, tmp_path):  # noqa: F811
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = exported(dataset[0], "sft")
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=SFTConfig(**common(tmp_path), max_length=128),
        train_dataset=rows, processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    assert trainer.train().global_step == 1
