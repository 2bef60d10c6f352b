"""A round's settings: the defaults, the presets (quick / standard) and their one schema, which
names a bad setting before a worker spends hours on it."""

from __future__ import annotations

import json

from annotation.models import STRENGTH_FILTER_VALUES, UNKNOWN_STRENGTH, Strength
from config.schema import schema_problem
from modeling.ml.training import TRAIN_SETTINGS_SCHEMA, TrainConfig


DEFAULT_CONFIG = {
    "heldout_percent": 10,
    # Llama 3 kept only its two strongest levels; pairs whose source gave no strength (imported
    # HH-RLHF) are kept too: nothing says they are weak.
    "dpo_strengths": [Strength.SIGNIFICANTLY_BETTER, Strength.BETTER, UNKNOWN_STRENGTH],
    # The new and the previous policy answer eval_prompts prompts neither trained on; the round's
    # reward model scores both answers, and with human_eval the pairs also go to the labelers as
    # evaluation comparisons (modeling/services/rounds/evaluation.py).
    "eval_prompts": 50,
    # How the reward model's and DPO's files count a comparison's k labels: "each" (a pair per
    # label), "majority", or "reliability-weighted" (the labeler-reliability model's winner, fitted
    # by the snapshot step on all the project's human judgments: annotation/reliability.py). The held-out file
    # stays "each", so held-out accuracy reads the same across rounds.
    "aggregation": "each",
    # As long as the committee's answers (DEFAULT_GENERATION): labelers judge these pairs too, and
    # answers cut at 128 tokens would be judged on where they stop.
    "eval_max_new_tokens": 256,
    "human_eval": True,
    # Two epochs over the round's pairs, at most 500 steps: 50 pairs are not trained for as many
    # steps as 50,000, which fixed step counts did (8 epochs of the demo). Llama 2 trained its RMs
    # for one epoch on millions of pairs; on 800 HH-RLHF pairs a second one measured 0.6674
    # against 0.6137 on the same 466 held-out pairs (bench/reward_model_hh.py, ablation table),
    # more than 2.3x the data gave in one (0.6481). Past 1,000 pairs the step cap ends it sooner.
    # max_length None: fitted to the round's pairs (the longest, rounded up to 64 tokens, at most
    # max_length_cap 2048 and the model's context); a pair over it loses its oldest turns until it
    # fits (trim_turns), else it is dropped; both are counted.
    # Full fine-tuning at lr 3e-5, the best measured against plain TRL on HH-RLHF
    # (bench/reward_model_hh.py, the ablation table in docs/benchmarks.md: 0.6137 against 0.6094
    # at 1e-5, inside one run's noise); a LoRA adapter ("lora": true) wants a higher learning
    # rate (TRL's PEFT default is 1e-4) and saves memory on large bases.
    "rm": {"epochs": 2, "max_steps": 500, "batch_size": 4, "learning_rate": 3e-5, "max_length": None, "lora": False},
    "dpo": {"epochs": 1, "max_steps": 500, "batch_size": 2, "learning_rate": 1e-5, "max_length": None, "beta": 0.1, "sft_weight": 0.2},
    # Weight averaging (modeling/services/rounds/averaging.py): M reward models and their soup;
    # the new policy averaged with the K latest earlier policies of the same base. 1 and 0: off.
    "averaging": {"rm_models": 1, "rm_soup": "greedy", "rm_validation_percent": 10, "policy_previous": 0},
    # None: train in the worker's process. {"num_processes": N, "args": [...]}: run the training
    # under `accelerate launch` (several GPUs; DDP/FSDP/DeepSpeed through its own flags/config).
    "accelerate": None,
}


# Named starting points for a round's settings; a round's own settings apply on top. "quick" is
# for a first look on a CPU (the demo's ~50 pairs in minutes): one pass, fewer steps, a short
# head-to-head. "standard" is DEFAULT_CONFIG.
PRESETS = {
    "quick": {
        "eval_prompts": 4,
        "eval_max_new_tokens": 64,
        "rm": {"epochs": 1, "max_steps": 40},
        "dpo": {"epochs": 1, "max_steps": 30},
    },
    "standard": {},
}


class RoundError(Exception):
    """A round that cannot start, retry or run; the message says why (a 400 on the API)."""


class RoundConflict(RoundError):
    """Another round of the project is queued or running, or this one cannot change state (a 409)."""


#: The settings a round takes, declared once: the API publishes this schema (modeling/serializers.py)
#: and ``merged_config`` checks requests against it (config/schema.py), with the setting's name in
#: the error, so a wrong type is refused here and not in the worker hours later.
ROUND_SETTINGS_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "heldout_percent": {"type": "integer", "minimum": 0, "maximum": 100},
        "dpo_strengths": {"type": "array", "items": {"type": "string", "enum": STRENGTH_FILTER_VALUES}},
        "eval_prompts": {"type": "integer", "minimum": 0, "maximum": 10000},
        "aggregation": {"type": "string", "enum": ["each", "majority", "reliability-weighted"]},
        "eval_max_new_tokens": {"type": "integer", "minimum": 1, "maximum": 4096},
        "human_eval": {"type": "boolean"},
        "rm": TRAIN_SETTINGS_SCHEMA,
        "dpo": TRAIN_SETTINGS_SCHEMA,
        "averaging": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "rm_models": {"type": "integer", "minimum": 1, "maximum": 16},
                "rm_soup": {"type": "string", "enum": ["uniform", "greedy"]},
                "rm_validation_percent": {"type": "integer", "minimum": 1, "maximum": 50},
                "policy_previous": {"type": "integer", "minimum": 0, "maximum": 16},
            },
        },
        "accelerate": {
            "type": "object", "nullable": True, "additionalProperties": False,
            "properties": {"num_processes": {"type": "integer", "minimum": 1}, "args": {"type": "array", "items": {"type": "string"}}},
        },
    },
}
assert set(ROUND_SETTINGS_SCHEMA["properties"]) == set(DEFAULT_CONFIG)


def merged_config(overrides: dict | None, preset: str = "standard") -> dict:
    """DEFAULT_CONFIG, then the preset's settings, then ``overrides``; checked, with the preset's
    name kept in the result."""
    if preset not in PRESETS:
        raise RoundError(f"preset: expected one of {', '.join(PRESETS)}, got {preset!r}")
    config = json.loads(json.dumps(DEFAULT_CONFIG))
    _apply(config, PRESETS[preset])
    _apply(config, overrides or {})
    config["preset"] = preset
    for part in ("rm", "dpo"):
        try:
            TrainConfig(**config[part])
        except TypeError as exc:
            raise RoundError(f"{part}: {exc}") from None
    return config


def _apply(config: dict, overrides: dict) -> None:
    problem = schema_problem(overrides, ROUND_SETTINGS_SCHEMA)
    if problem:
        raise RoundError(problem)
    for key, value in overrides.items():
        if isinstance(config[key], dict) and key != "accelerate":
            config[key].update(value)
        else:
            config[key] = value
