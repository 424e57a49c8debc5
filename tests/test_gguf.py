"""gilbench's one-pass GGUF reader against transformers' own GGUF loader, on a tiny Llama written in the test."""

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from gilbench.errors import GilbenchError  # noqa: E402
from gilbench.models.gguf_llama import (  # noqa: E402
    convert_llama_gguf,
    hf_name,
    read_gguf,
    read_llama_gguf,
    unpermute_rotary,
)

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN, VOCAB = 64, 2, 4, 2, 96, 40


def _permute_like_llama_cpp(w: np.ndarray, n_heads: int) -> np.ndarray:
    """The exporter's order: within each head, row i of the first half and row i of the second half side by side."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write_tiny_llama(path, tied: bool = True) -> None:
    """A tiny Llama GGUF: layer 1 quantised to Q8_0, the rest F32; q/k rows in llama.cpp's order."""
    rng = np.random.default_rng(0)
    head_dim = HIDDEN // HEADS
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(LAYERS)
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(50000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(VOCAB)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(VOCAB)])
    writer.add_token_merges([])
    writer.add_token_types([1] * VOCAB)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)

    def put(gguf_name: str, hf: np.ndarray, stored: np.ndarray | None = None, quantize: bool = False):
        stored = hf if stored is None else stored
        if quantize:
            q = gguf.quants.quantize(stored, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(gguf_name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(gguf_name, stored)

    put("token_embd.weight", rng.normal(size=(VOCAB, HIDDEN)).astype(np.float32))
    for i in range(LAYERS):
        for name, shape in [
            ("attn_q", (HEADS * head_dim, HIDDEN)),
            ("attn_k", (KV_HEADS * head_dim, HIDDEN)),
            ("attn_v", (KV_HEADS * head_dim, HIDDEN)),
            ("attn_output", (HIDDEN, HIDDEN)),
            ("ffn_gate", (FFN, HIDDEN)),
            ("ffn_up", (FFN, HIDDEN)),
            ("ffn_down", (HIDDEN, FFN)),
        ]:
            w = rng.normal(size=shape).astype(np.float32)
            heads = {"attn_q": HEADS, "attn_k": KV_HEADS}.get(name)
            put(f"blk.{i}.{name}.weight", w, _permute_like_llama_cpp(w, heads) if heads else w, quantize=i == 1)
        put(f"blk.{i}.attn_norm.weight", rng.normal(size=HIDDEN).astype(np.float32))
        put(f"blk.{i}.ffn_norm.weight", rng.normal(size=HIDDEN).astype(np.float32))
    put("output_norm.weight", rng.normal(size=HIDDEN).astype(np.float32))
    if not tied:
        put("output.weight", rng.normal(size=(VOCAB, HIDDEN)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_unpermute_inverts_the_exporters_order():
    w = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    assert np.array_equal(unpermute_rotary(_permute_like_llama_cpp(w, 2), 2), w)
    # head 0 of 4 rows stored as pairs (0, 2), (1, 3): unpermuted, the halves are rows 0-1 and 2-3
    assert unpermute_rotary(np.array([[0.0], [2.0], [1.0], [3.0]]), 1).ravel().tolist() == [0, 1, 2, 3]


def test_names_map_to_transformers_llama():
    assert hf_name("blk.12.attn_q.weight") == "model.layers.12.self_attn.q_proj.weight"
    assert hf_name("blk.0.ffn_norm.weight") == "model.layers.0.post_attention_layernorm.weight"
    assert hf_name("token_embd.weight") == "model.embed_tokens.weight"
    with pytest.raises(GilbenchError, match="no Llama counterpart"):
        hf_name("blk.0.ssm_conv1d.weight")


def test_header_parser_equals_the_gguf_packages_reader(tmp_path):
    path = tmp_path / "tiny.gguf"
    _write_tiny_llama(path)
    metadata, tensors = read_gguf(path)
    theirs = gguf.GGUFReader(str(path))
    assert metadata == {k: f.contents() for k, f in theirs.fields.items() if not k.startswith("GGUF.")}
    assert [t.name for t in tensors] == [t.name for t in theirs.tensors]
    for ours, their in zip(tensors, theirs.tensors):
        assert ours.kind == their.tensor_type and list(ours.shape) == their.shape.tolist(), ours.name
        assert ours.data.dtype == their.data.dtype and np.array_equal(ours.data, their.data), ours.name


def test_a_damaged_file_is_refused_by_name(tmp_path):
    path = tmp_path / "tiny.gguf"
    _write_tiny_llama(path)
    data = path.read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])  # the header is whole, the last tensors are not
    with pytest.raises(GilbenchError, match="past the end of the file"):
        read_gguf(tmp_path / "cut.gguf")
    (tmp_path / "head.gguf").write_bytes(data[:200])  # inside the metadata
    with pytest.raises(GilbenchError, match="truncated"):
        read_gguf(tmp_path / "head.gguf")
    (tmp_path / "not.gguf").write_bytes(b"PK\x03\x04" + data[4:])
    with pytest.raises(GilbenchError, match="not a GGUF file"):
        read_gguf(tmp_path / "not.gguf")


@pytest.mark.parametrize("tied", [True, False])
def test_reader_equals_transformers_gguf_loader(tmp_path, tied):
    from transformers import AutoModelForCausalLM

    path = tmp_path / "tiny.gguf"
    _write_tiny_llama(path, tied=tied)
    config, state = read_llama_gguf(path)
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32)
    their_state = theirs.state_dict()
    assert set(state) | ({"lm_head.weight"} if tied else set()) == set(their_state)
    for name, value in state.items():
        assert torch.equal(value, their_state[name]), name
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads"):
        assert getattr(config, key) == getattr(theirs.config, key), key
    assert config.tie_word_embeddings is tied and config.rms_norm_eps == pytest.approx(1e-5)
    assert config.rope_parameters["rope_theta"] == theirs.config.rope_parameters["rope_theta"] == 50000.0

    # The written folder loads as a plain transformers model with the same logits.
    convert_llama_gguf(path, tmp_path / "hf")
    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    ids = torch.tensor([[1, 5, 9, 33, 7, 2]])
    with torch.no_grad():
        assert torch.allclose(ours(ids).logits, theirs.eval()(ids).logits, atol=1e-5)


def test_other_architectures_are_refused(tmp_path):
    path = tmp_path / "gpt2.gguf"
    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(GilbenchError, match="only Llama GGUF"):
        read_llama_gguf(path)
