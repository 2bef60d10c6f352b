"""A round's settings: the defaults, the presets (quick / standard) and the checks that name a
bad setting before a worker spends hours on it (the API schema in modeling/serializers.py says
the same)."""

from __future__ import annotations

import json


from annotation.models import Strength


DEFAULT_CONFIG = {
    "heldout_percent": 10,
    "dpo_strengths": [Strength.SIGNIFICANTLY_BETTER, Strength.BETTER],  # Llama 3 kept only these
    "eval_prompts": 16,
    "eval_max_new_tokens": 128,
    # One epoch over the round's pairs (Llama 2 trained its RMs for one), at most 500 steps: 50 pairs
    # are not trained for as many steps as 50,000, which fixed step counts did (8 epochs of the demo).
    # max_length None: fitted to the round's pairs (the longest, rounded up to 64 tokens, at most
    # max_length_cap 2048 and the model's context); pairs over it are dropped and counted.
    "rm": {"epochs": 1, "max_steps": 500, "batch_size": 4, "learning_rate": 1e-5, "max_length": None},
    "dpo": {"epochs": 1, "max_steps": 500, "batch_size": 2, "learning_rate": 1e-5, "max_length": None, "beta": 0.1, "sft_weight": 0.2},
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


def _is(value, kinds: tuple) -> bool:
    """``value`` is a JSON value of one of ``kinds`` (a bool is no int in JSON)."""
    return isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)


#: JSON types of the training settings, from TrainConfig's annotations ("float | None", ...).
_TRAIN_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,)}


def _check_types(overrides: dict) -> None:
    """Wrong types are refused here, with the setting's name, not in the worker hours later
    (and ``accelerate.num_processes: "x"`` was a 500 here). Schema: modeling/serializers.py."""
    from dataclasses import fields

    from modeling.ml.training import POSITIVE_SETTINGS, TrainConfig

    train_types = {}
    for f in fields(TrainConfig):
        kinds = tuple(k for part in str(f.type).split("|") for k in _TRAIN_TYPES.get(part.strip(), ()))
        train_types[f.name] = (kinds, "None" in str(f.type))
    for key, value in overrides.items():
        if key in ("heldout_percent", "eval_prompts", "eval_max_new_tokens"):
            low, high = {"heldout_percent": (0, 100), "eval_prompts": (0, None), "eval_max_new_tokens": (1, None)}[key]
            if not _is(value, (int,)) or value < low or (high is not None and value > high):
                raise RoundError(f"{key}: expected a whole number from {low}" + (f" to {high}" if high else " up"))
        elif key == "dpo_strengths":
            if not isinstance(value, list) or not all(isinstance(v, str) and v in Strength.values for v in value):
                raise RoundError(f"dpo_strengths: expected a list of {', '.join(Strength.values)}")
        elif key == "accelerate" and value is not None:
            if (
                not isinstance(value, dict)
                or set(value) - {"num_processes", "args"}
                or not _is(value.get("num_processes", 1), (int,))
                or value.get("num_processes", 1) < 1
                or not isinstance(value.get("args", []), list)
                or not all(isinstance(a, str) for a in value.get("args", []))
            ):
                raise RoundError('accelerate: expected null or {"num_processes": N, "args": ["--flag", ...]}')
        elif key in ("rm", "dpo") and isinstance(value, dict):
            for name, setting in value.items():
                kinds, nullable = train_types.get(name, ((), False))
                if kinds and not (setting is None and nullable) and not _is(setting, kinds):
                    raise RoundError(f"{key}.{name}: expected {'/'.join(k.__name__ for k in kinds)}, got {setting!r}")
                if name in POSITIVE_SETTINGS and setting is not None and not setting > 0:
                    raise RoundError(f"{key}.{name}: must be above 0, got {setting!r}")


def merged_config(overrides: dict | None, preset: str = "standard") -> dict:
    """DEFAULT_CONFIG, then the preset's settings, then ``overrides``; checked, with the preset's
    name kept in the result."""
    if preset not in PRESETS:
        raise RoundError(f"preset: expected one of {', '.join(PRESETS)}, got {preset!r}")
    config = json.loads(json.dumps(DEFAULT_CONFIG))
    _apply(config, PRESETS[preset])
    _apply(config, overrides or {})
    config["preset"] = preset
    from modeling.ml.training import TrainConfig

    for part in ("rm", "dpo"):
        try:
            TrainConfig(**config[part])
        except TypeError as exc:
            raise RoundError(f"{part}: {exc}") from None
    return config


def _apply(config: dict, overrides: dict) -> None:
    _check_types({key: value for key, value in overrides.items() if key in config})
    for key, value in overrides.items():
        if key not in config:
            raise RoundError(f"unknown round setting {key!r}; known: {', '.join(sorted(config))}")
        if key == "accelerate":
            config[key] = value
        elif isinstance(config[key], dict):
            if not isinstance(value, dict):
                raise RoundError(f"{key}: expected an object of settings")
            config[key].update(value)
        else:
            config[key] = value
