"""Which device training and generation run on. Plain Python; torch is imported on call."""

from __future__ import annotations


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
