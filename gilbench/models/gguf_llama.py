"""A Llama GGUF file as a transformers config and float32 state dict, from one read of the file.

transformers can load GGUF itself, but it parses the file three times (config, weights, tokenizer) and rebuilds
gguf's tensor-name tables once per module: 26 s of the smollm2-135m preset's first load on 2 cores, of which
reading and dequantising the 272 tensors is about 5. Here the file is read once and the names are mapped by the
table below; the tokenizer still comes from transformers (its GGUF tokenizer conversion is not ours to redo).
"""

from __future__ import annotations

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


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


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
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from transformers import LlamaConfig

    reader = GGUFReader(str(path))
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise GilbenchError(f"{path} holds a '{arch}' model; only Llama GGUF files load here")
    n_heads = int(_field(reader, "llama.attention.head_count"))
    n_kv_heads = int(_field(reader, "llama.attention.head_count_kv", n_heads))
    state = {}
    for tensor in reader.tensors:
        values = dequantize(tensor.data, tensor.tensor_type)
        values = values.reshape(tuple(reversed(tensor.shape.tolist())))  # GGUF lists the innermost dimension first
        if ".attn_q." in tensor.name:
            values = unpermute_rotary(values, n_heads)
        elif ".attn_k." in tensor.name:
            values = unpermute_rotary(values, n_kv_heads)
        # F32 tensors come back as read-only views of the file: copy those (and only those) into owned memory
        values = np.require(values, dtype=np.float32, requirements=["C_CONTIGUOUS", "WRITEABLE", "OWNDATA"])
        state[hf_name(tensor.name)] = torch.from_numpy(values)
    hidden = int(_field(reader, "llama.embedding_length"))
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    config = LlamaConfig(
        vocab_size=int(_field(reader, "llama.vocab_size", len(tokens.data) if tokens else 32000)),
        hidden_size=hidden,
        intermediate_size=int(_field(reader, "llama.feed_forward_length")),
        num_hidden_layers=int(_field(reader, "llama.block_count")),
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        head_dim=int(_field(reader, "llama.rope.dimension_count", hidden // n_heads)),
        max_position_embeddings=int(_field(reader, "llama.context_length", 2048)),
        rms_norm_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-6)),
        rope_theta=float(_field(reader, "llama.rope.freq_base", 10000.0)),
        bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_id=_field(reader, "tokenizer.ggml.eos_token_id"),
        pad_token_id=_field(reader, "tokenizer.ggml.padding_token_id"),
        unk_token_id=_field(reader, "tokenizer.ggml.unknown_token_id"),
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
