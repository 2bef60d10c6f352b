"""Which device training and generation run on. Plain Python; torch is imported on call."""

from __future__ import annotations


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def pick_device() -> str:
    """Where a model runs in this process: "cuda" when a GPU is visible, else "cpu"."""
    return "cuda" if cuda_available() else "cpu"


def bf16_supported() -> bool:
    """bf16 training: on a CUDA device that has it; never on CPU (slow, and transformers asks
    for use_cpu to allow it)."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def describe_device() -> dict:
    """``{"device": "cuda"|"cpu", "bf16": bool, "name": str, "count": int}`` for this process."""
    import torch

    if torch.cuda.is_available():
        return {
            "device": "cuda",
            "bf16": bool(torch.cuda.is_bf16_supported()),
            "name": torch.cuda.get_device_name(0),
            "count": torch.cuda.device_count(),
        }
    return {"device": "cpu", "bf16": False, "name": "cpu", "count": 1}
