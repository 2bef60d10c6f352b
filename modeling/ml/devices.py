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


def cpu_cores() -> int:
    """The cores this process may run on (its affinity, which a container's cpuset narrows)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies of all CPUs since boot, from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + (fields[4] if len(fields) > 4 else 0), sum(fields[:8])


def free_cpu_cores(window_s: float = 0.05) -> int:
    """How many of this process's cores are idle right now (at least 1): CPU time over a short
    window, read while this process itself computes nothing. llama.cpp's threads spin-wait on
    each other, so one thread per core that is busy elsewhere does not add speed, it collapses it
    (33.5 tokens/s with 1 thread against 9.2 with 2 while another job held a core): the machine's
    busy cores, rounded, are taken off this process's."""
    import os
    import time

    cores = cpu_cores()
    before = _cpu_times()
    if before is None or cores == 1:
        return cores
    time.sleep(window_s)
    after = _cpu_times()
    total = after[1] - before[1]
    if total <= 0:
        return cores
    busy_cores = (1 - (after[0] - before[0]) / total) * (os.cpu_count() or cores)
    return max(1, min(cores, cores - round(busy_cores)))
