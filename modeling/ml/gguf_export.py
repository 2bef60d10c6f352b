"""A round's policy as a GGUF file, so llama.cpp serves it on CPU like its base.

A round trains from a base member; when that base is a GGUF file (the packaged SmolLM2), the
merged policy (base + LoRA adapter, or full weights) is written once as GGUF beside the checkpoint
(``POLICY_GGUF``), with everything but the weights copied from the base file: architecture
settings, tokenizer, chat template. Weights are llama.cpp's layout: HF's q/k projections permuted
back (transformers un-permutes them when it reads a GGUF), 2-D weights quantized to Q8_0
(near-lossless; what ``convert_hf_to_gguf.py --outtype q8_0`` writes), norms in F32, a tied output
head left out (llama.cpp reuses the embeddings).

Llama-architecture models only (SmolLM2, Llama, Mistral-style); anything else is refused with a
clear error and the policy is served by transformers. Written to a temporary file and renamed into
place: a crash never leaves a half-written GGUF for llama.cpp to load.

Plain Python; numpy, gguf, torch, transformers and peft are imported inside functions.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The converted policy's file name, inside the checkpoint's directory.
POLICY_GGUF = "policy.Q8_0.gguf"
#: Metadata of the base file that describes the file itself, not the model: written anew.
_NOT_COPIED = ("GGUF.", "general.architecture", "general.file_type", "general.name", "general.quantization_version")


class GgufExportError(Exception):
    """The checkpoint cannot be written as GGUF (another architecture, shapes that differ from the base)."""


def _permute(weights, n_head: int, n_head_kv: int):
    """HF's q/k projection rows to llama.cpp's rotary layout (inverse of transformers' reverse permute)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def write_policy_gguf(state_dict: dict, config, base_gguf: str | os.PathLike, target: str | os.PathLike, *, name: str = "") -> Path:
    """Write ``state_dict`` (a transformers LlamaForCausalLM's) as GGUF at ``target``, metadata from ``base_gguf``."""
    import gguf
    import numpy as np

    base_gguf, target = Path(base_gguf), Path(target)
    reader = gguf.GGUFReader(base_gguf)
    arch = reader.fields["general.architecture"].contents()
    if arch != "llama" or getattr(config, "model_type", "") != "llama":
        raise GgufExportError(f"GGUF export handles llama-architecture models; the base is {arch!r}, the checkpoint {getattr(config, 'model_type', '?')!r}")
    expected = {
        "llama.block_count": config.num_hidden_layers, "llama.embedding_length": config.hidden_size,
        "llama.attention.head_count": config.num_attention_heads, "llama.attention.head_count_kv": config.num_key_value_heads,
        "llama.feed_forward_length": config.intermediate_size,
    }
    for key, value in expected.items():
        if key in reader.fields and int(reader.fields[key].contents()) != int(value):
            raise GgufExportError(f"the checkpoint's {key.split('.', 1)[1]} ({value}) differs from its base GGUF's ({reader.fields[key].contents()})")

    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(tmp, arch)
    try:
        for key, field in reader.fields.items():
            if key.startswith(_NOT_COPIED):
                continue
            vtype = field.types[0]
            if vtype == gguf.GGUFValueType.ARRAY:
                writer.add_key_value(key, field.contents(), vtype, sub_type=field.types[-1])
            else:
                writer.add_key_value(key, field.contents(), vtype)
        writer.add_name(name or target.parent.name)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
        tied = bool(getattr(config, "tie_word_embeddings", False))
        written = set()
        for hf_name, tensor in state_dict.items():
            if tied and hf_name == "lm_head.weight":
                continue
            if hf_name.endswith("rotary_emb.inv_freq"):
                continue
            gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise GgufExportError(f"no GGUF name for the checkpoint's tensor {hf_name}")
            data = tensor.detach().float().cpu().numpy()
            if hf_name.endswith("q_proj.weight"):
                data = _permute(data, config.num_attention_heads, config.num_attention_heads)
            elif hf_name.endswith("k_proj.weight"):
                data = _permute(data, config.num_attention_heads, config.num_key_value_heads)
            if data.ndim == 2 and data.shape[-1] % 32 == 0:
                writer.add_tensor(gguf_name, gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0),
                                  raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            else:
                writer.add_tensor(gguf_name, np.ascontiguousarray(data, dtype=np.float32))
            written.add(gguf_name)
        missing = {t.name for t in reader.tensors} - written
        if missing:
            raise GgufExportError(f"the checkpoint lacks tensors its base has: {', '.join(sorted(missing)[:5])}")
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with open(tmp, "rb+") as written_file:
            os.fsync(written_file.fileno())
        tmp.replace(target)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return target


def merged_policy(checkpoint_dir: str | os.PathLike, base_dir: str | os.PathLike):
    """The checkpoint as one transformers model: a LoRA adapter merged into its base, or full weights."""
    from transformers import AutoModelForCausalLM

    checkpoint_dir = Path(checkpoint_dir)
    if (checkpoint_dir / "adapter_config.json").exists():
        from peft import PeftModel

        model = AutoModelForCausalLM.from_pretrained(base_dir)
        return PeftModel.from_pretrained(model, str(checkpoint_dir)).merge_and_unload()
    return AutoModelForCausalLM.from_pretrained(checkpoint_dir)


def policy_gguf(checkpoint_dir: str | os.PathLike, base_dir: str | os.PathLike, base_gguf: str | os.PathLike) -> Path:
    """The checkpoint's GGUF beside it, converted on first use (about as long as loading it)."""
    target = Path(checkpoint_dir) / POLICY_GGUF
    if target.exists():
        return target
    model = merged_policy(checkpoint_dir, base_dir)
    return write_policy_gguf(model.state_dict(), model.config, base_gguf, target, name=Path(checkpoint_dir).name)
