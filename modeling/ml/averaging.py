"""Weight averaging of checkpoints of one base model. Plain Python.

Fine-tuned models that share their starting point can be averaged parameter by parameter into
one model that is usually at least as good as the best of them: model soups (Wortsman et al.,
2022, uniform and greedy), WARM for reward models (Ramé et al., 2024) and Llama 3's averaging of
models from runs with different data or settings. Checkpoints of different bases (another
architecture, other shapes, other parameter names) have no meaningful average and are refused.

``average_checkpoints`` reads the safetensors files tensor by tensor (memory: about two tensors
at a time, not N models) and writes only into the ``output_dir`` it is given; the caller renames
the finished folder into place. ``greedy_soup`` adds candidates best-first while a validation
score does not drop; the score must come from a split that is not the held-out test split.
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

#: Config fields two checkpoints must agree on to be averaged (the rest, such as the torch dtype
#: or a transformers version, may differ).
SAME_BASE_FIELDS = (
    "architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "num_labels", "tie_word_embeddings",
)
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"


class AveragingError(ValueError):
    """Checkpoints that cannot be averaged; the message says which and why."""


def _tensor_files(model_dir: Path) -> dict[str, Path]:
    """Parameter name -> the safetensors file holding it (one file, or a sharded index)."""
    index = model_dir / INDEX_NAME
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: model_dir / file for name, file in weight_map.items()}
    single = model_dir / WEIGHTS_NAME
    if not single.exists():
        raise AveragingError(f"{model_dir}: no {WEIGHTS_NAME} or {INDEX_NAME} (only safetensors checkpoints are averaged)")
    from safetensors import safe_open

    with safe_open(str(single), framework="pt") as f:
        return dict.fromkeys(f.keys(), single)


def _base_of(model_dir: Path) -> dict:
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise AveragingError(f"{model_dir}: no readable config.json ({exc})") from None
    # A 1-output reward head may be recorded only through id2label.
    config.setdefault("num_labels", len(config.get("id2label") or {}) or None)
    return {key: config.get(key) for key in SAME_BASE_FIELDS}


def check_same_base(model_dirs: list[Path]) -> list[dict[str, Path]]:
    """Each checkpoint's parameter map (name -> file), once every other has the first one's base
    and parameters; AveragingError naming the first difference otherwise."""
    if not model_dirs:
        raise AveragingError("no checkpoint to average")
    first, base = model_dirs[0], _base_of(model_dirs[0])
    maps = [_tensor_files(first)]
    from safetensors import safe_open

    def shapes(tensor_files: dict[str, Path]) -> dict[str, tuple]:
        found = {}
        for file in set(tensor_files.values()):
            with safe_open(str(file), framework="pt") as f:
                found.update({name: tuple(f.get_slice(name).get_shape()) for name in f.keys()})
        return found

    first_shapes = shapes(maps[0])
    for other in model_dirs[1:]:
        other_base = _base_of(other)
        differ = [k for k in SAME_BASE_FIELDS if other_base[k] != base[k]]
        if differ:
            k = differ[0]
            raise AveragingError(
                f"different bases: {first.name} has {k}={base[k]!r}, {other.name} has {k}={other_base[k]!r}; "
                "only checkpoints fine-tuned from the same model can be averaged"
            )
        maps.append(_tensor_files(other))
        other_shapes = shapes(maps[-1])
        if other_shapes != first_shapes:
            missing = sorted(set(first_shapes) ^ set(other_shapes))
            name = missing[0] if missing else next(n for n in first_shapes if first_shapes[n] != other_shapes[n])
            raise AveragingError(
                f"different bases: parameter {name!r} differs between {first.name} ({first_shapes.get(name)}) "
                f"and {other.name} ({other_shapes.get(name)})"
            )
    return maps


def average_checkpoints(model_dirs: list[str | Path], output_dir: str | Path, *, weights: list[float] | None = None) -> dict:
    """Write the weighted mean of ``model_dirs`` (uniform by default) into ``output_dir``: the
    first checkpoint's config and tokenizer, its file layout, each tensor averaged in float32 and
    stored in its own dtype. Returns what was done (for a round's metrics)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    dirs = [Path(d) for d in model_dirs]
    if weights is None:
        weights = [1.0] * len(dirs)
    if len(weights) != len(dirs) or any(not (w > 0) for w in weights):
        raise AveragingError(f"expected one weight above 0 per checkpoint, got {weights!r} for {len(dirs)}")
    total = float(sum(weights))
    shares = [w / total for w in weights]
    started = time.perf_counter()
    maps = check_same_base(dirs)
    first_files = maps[0]
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for item in dirs[0].iterdir():  # config, tokenizer, generation config; not the weights
        if item.is_file() and not item.name.endswith(".safetensors") and item.name != INDEX_NAME:
            shutil.copy2(item, out / item.name)
    if (dirs[0] / INDEX_NAME).exists():
        shutil.copy2(dirs[0] / INDEX_NAME, out / INDEX_NAME)
    parameters = 0
    with ExitStack() as stack:
        handles: dict[Path, object] = {}

        def opened(file: Path):  # each file opened once (memory-mapped), read tensor by tensor
            if file not in handles:
                handles[file] = stack.enter_context(safe_open(str(file), framework="pt"))
            return handles[file]

        for shard in sorted(set(first_files.values())):
            averaged = {}
            for name in (n for n, f in first_files.items() if f == shard):
                mean, dtype = None, None
                for share, tensor_map in zip(shares, maps):
                    tensor = opened(tensor_map[name]).get_tensor(name)
                    dtype = dtype or tensor.dtype
                    term = tensor.to(torch.float32) * share
                    mean = term if mean is None else mean.add_(term)
                averaged[name] = mean.to(dtype)
                parameters += mean.numel()
            save_file(averaged, str(out / shard.name), metadata={**(opened(shard).metadata() or {}), "format": "pt"})
    return {
        "models": len(dirs), "weights": [round(s, 6) for s in shares], "parameters": parameters,
        "seconds": round(time.perf_counter() - started, 2), "sources": [d.name for d in dirs],
    }


def greedy_soup(candidates: list[str | Path], score: Callable[[Path], float], workdir: str | Path) -> dict:
    """Wortsman et al.'s greedy soup: rank ``candidates`` by ``score`` (a validation metric,
    higher is better), start from the best, and add each next one if the uniform average with it
    scores at least as well. Returns the chosen checkpoints, every score and the soup's folder
    (``workdir/soup``; a single chosen checkpoint is copied there as it is)."""
    work = Path(workdir)
    ranked = sorted(((score(Path(c)), Path(c)) for c in candidates), key=lambda pair: -pair[0])
    if not ranked:
        raise AveragingError("no candidate for the soup")
    chosen, best = [ranked[0][1]], ranked[0][0]
    tried = []
    for i, (single, candidate) in enumerate(ranked[1:], start=1):
        trial = work / f"trial-{i}"
        average_checkpoints(chosen + [candidate], trial)
        trial_score = score(trial)
        tried.append({"added": candidate.name, "alone": single, "soup": trial_score, "kept": trial_score >= best})
        if trial_score >= best:
            chosen.append(candidate)
            best = trial_score
        shutil.rmtree(trial, ignore_errors=True)
    soup = work / "soup"
    if len(chosen) == 1:
        shutil.copytree(chosen[0], soup)
    else:
        average_checkpoints(chosen, soup)
    return {
        "soup_dir": str(soup), "chosen": [c.name for c in chosen], "validation": best,
        "candidates": {c.name: s for s, c in ranked}, "tried": tried,
    }
