"""A Llama GGUF file as a transformers config and float32 state dict, from one read of the file.

transformers can load GGUF itself, but it parses the file three times (config, weights, tokenizer) and rebuilds
gguf's tensor-name tables once per module: 26 s of the smollm2-135m preset's first load on 2 cores, of which
reading and dequantising the 272 tensors is about 5. Here the file is read once and the names are mapped by the
table below; the tokenizer still comes from transformers (its GGUF tokenizer conversion is not ours to redo).

The header is parsed here too (``read_gguf``, GGUF versions 2 and 3): the gguf package's reader turns each of the
~100k vocabulary and merge strings into numpy views, 8 s on 2 cores for SmolLM2's file, where plain ``struct``
takes a fraction of a second. gguf still dequantises.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gilbench.errors import GilbenchError

# GGUF tensor name (after "blk.N.") -> transformers' LlamaForCausalLM name (after "model.layers.N.")
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


# GGUF metadata value types (the spec's numbering) -> struct format; 8 is a string, 9 an array
_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY_TYPES = {kind: np.dtype(fmt) for kind, fmt in _SCALAR_FORMATS.items()}
_STRING, _ARRAY = 8, 9


@dataclass
class GGUFTensor:
    name: str
    shape: tuple[int, ...]  # as GGUF lists it, innermost dimension first
    kind: object  # gguf.GGMLQuantizationType
    data: np.ndarray  # a read-only view of the file: plain types as numbers, quantised ones as bytes (gguf's layout)


class _Cursor:
    """Reads the little-endian header of a memory-mapped file front to back."""

    def __init__(self, buffer, path: Path):
        self.buffer, self.pos, self.path = buffer, 0, path

    def truncated(self) -> GilbenchError:
        return GilbenchError(f"{self.path} ends inside its GGUF header: the file is truncated; reinstall it")

    def unpack(self, fmt: str):
        try:
            (value,) = struct.unpack_from(fmt, self.buffer, self.pos)
        except struct.error:
            raise self.truncated() from None
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        raw = self.buffer[self.pos : self.pos + n]
        if len(raw) < n:
            raise self.truncated()
        self.pos += n
        return bytes(raw).decode("utf-8")

    def value(self, kind: int):
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, n = self.unpack("<I"), self.unpack("<Q")
            if item_kind in _NUMPY_TYPES:  # one numpy read, not n struct calls
                if self.pos + n * _NUMPY_TYPES[item_kind].itemsize > len(self.buffer):
                    raise self.truncated()
                values = np.frombuffer(self.buffer, _NUMPY_TYPES[item_kind], n, self.pos)
                self.pos += values.nbytes
                return values.tolist()
            return [self.value(item_kind) for _ in range(n)]
        if kind not in _SCALAR_FORMATS:
            raise GilbenchError(
                f"{self.path}: unknown GGUF metadata type {kind} at byte {self.pos}; is it a GGUF file?"
            )
        return self.unpack(_SCALAR_FORMATS[kind])


def read_gguf(path: str | Path) -> tuple[dict, list[GGUFTensor]]:
    """``(metadata, tensors)`` of a GGUF file (versions 2 and 3); tensor data stays in the memory-mapped file."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import quant_shape_to_byte_shape

    path = Path(path)
    with open(path, "rb") as f:
        buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # stays mapped while a tensor view refers to it
    cursor = _Cursor(buffer, path)
    if bytes(buffer[:4]) != b"GGUF":
        raise GilbenchError(f"{path} is not a GGUF file (it does not start with 'GGUF'); reinstall it")
    cursor.pos = 4
    version = cursor.unpack("<I")
    if version not in (2, 3):
        raise GilbenchError(f"{path} is GGUF version {version}; only versions 2 and 3 are read")
    n_tensors, n_fields = cursor.unpack("<Q"), cursor.unpack("<Q")
    metadata = {}
    for _ in range(n_fields):
        key = cursor.string()
        metadata[key] = cursor.value(cursor.unpack("<I"))
    infos = []
    for _ in range(n_tensors):
        name, n_dims = cursor.string(), cursor.unpack("<I")
        shape = tuple(cursor.unpack("<Q") for _ in range(n_dims))
        infos.append((name, shape, GGMLQuantizationType(cursor.unpack("<I")), cursor.unpack("<Q")))
    alignment = int(metadata.get("general.alignment", 32))
    start = -(-cursor.pos // alignment) * alignment
    plain = {"F32": np.float32, "F16": np.float16, "F64": np.float64}
    plain |= {"I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64}  # the rest: bytes in gguf's layout
    tensors = []
    for name, shape, kind, offset in infos:
        block, type_size = GGML_QUANT_SIZES[kind]
        n_bytes = int(np.prod(shape)) * type_size // block
        if start + offset + n_bytes > len(buffer):
            raise GilbenchError(f"{path}: tensor {name} lies past the end of the file: it is truncated; reinstall it")
        raw = np.frombuffer(buffer, np.uint8, n_bytes, start + offset)
        dims = tuple(reversed(shape))
        if kind.name in plain:
            data = raw.view(plain[kind.name]).reshape(dims)
        else:
            data = raw.reshape(quant_shape_to_byte_shape(dims, kind))
        tensors.append(GGUFTensor(name, shape, kind, data))
    return metadata, tensors


def hf_name(gguf_name: str) -> str:
    """``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj.weight``."""
    stem, _, suffix = gguf_name.rpartition(".")
    parts = stem.split(".")
    if parts[0] == "blk" and len(parts) == 3 and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{suffix}"
    if stem in _TOP_NAMES:
        return f"{_TOP_NAMES[stem]}.{suffix}"
    raise GilbenchError(f"GGUF tensor '{gguf_name}' has no Llama counterpart; only plain Llama GGUF files load here")


def unpermute_rotary(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's export order of q/k rows. It stores each head's rotary pairs interleaved (the pair of
    dimension i sits at rows 2i, 2i+1); transformers' rotate_half expects the two halves of the head stacked."""
    half = weight.shape[0] // n_heads // 2
    return weight.reshape(n_heads, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def read_llama_gguf(path: str | Path):
    """``(LlamaConfig, state dict of float32 tensors)`` of a Llama GGUF file; tied embeddings leave out lm_head."""
    from gguf.quants import dequantize
    from transformers import LlamaConfig

    meta, tensors = read_gguf(path)
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise GilbenchError(f"{path} holds a '{arch}' model; only Llama GGUF files load here")
    n_heads = int(meta["llama.attention.head_count"])
    n_kv_heads = int(meta.get("llama.attention.head_count_kv", n_heads))
    state = {}
    for tensor in tensors:
        values = dequantize(tensor.data, tensor.kind)
        values = values.reshape(tuple(reversed(tensor.shape)))  # GGUF lists the innermost dimension first
        if ".attn_q." in tensor.name:
            values = unpermute_rotary(values, n_heads)
        elif ".attn_k." in tensor.name:
            values = unpermute_rotary(values, n_kv_heads)
        # F32 tensors come back as read-only views of the file: copy those (and only those) into owned memory
        values = np.require(values, dtype=np.float32, requirements=["C_CONTIGUOUS", "WRITEABLE", "OWNDATA"])
        state[hf_name(tensor.name)] = torch.from_numpy(values)
    hidden = int(meta["llama.embedding_length"])
    config = LlamaConfig(
        vocab_size=int(meta.get("llama.vocab_size", len(meta.get("tokenizer.ggml.tokens", [])) or 32000)),
        hidden_size=hidden,
        intermediate_size=int(meta["llama.feed_forward_length"]),
        num_hidden_layers=int(meta["llama.block_count"]),
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        head_dim=int(meta.get("llama.rope.dimension_count", hidden // n_heads)),
        max_position_embeddings=int(meta.get("llama.context_length", 2048)),
        rms_norm_eps=float(meta.get("llama.attention.layer_norm_rms_epsilon", 1e-6)),
        rope_theta=float(meta.get("llama.rope.freq_base", 10000.0)),
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=meta.get("tokenizer.ggml.eos_token_id"),
        pad_token_id=meta.get("tokenizer.ggml.padding_token_id"),
        unk_token_id=meta.get("tokenizer.ggml.unknown_token_id"),
        tie_word_embeddings="lm_head.weight" not in state,
    )
    config.architectures, config.dtype = ["LlamaForCausalLM"], torch.float32  # as save_pretrained of a float32 model
    return config, state


def convert_llama_gguf(path: str | Path, folder: str | Path) -> None:
    """Write the GGUF file's model into ``folder`` as transformers saves one: config.json, generation_config.json
    and model.safetensors (float32; tied embeddings stored once, as save_pretrained does)."""
    from safetensors.torch import save_file
    from transformers import GenerationConfig

    config, state = read_llama_gguf(path)
    config.save_pretrained(folder)
    GenerationConfig.from_model_config(config).save_pretrained(folder)
    save_file(state, str(Path(folder) / "model.safetensors"), metadata={"format": "pt"})
