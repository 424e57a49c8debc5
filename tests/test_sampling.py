"""The rollout sampler (rl/rollout.py): draws follow softmax(logits / T) cut to the top-p nucleus, and the
decoding loop gives what ``generate`` gives, EOS handling included."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from gilbench.rl.rollout import next_tokens, sample


def draw_frequencies(logits: list[float], temperature: float, top_p: float, n: int = 40_000) -> torch.Tensor:
    torch.manual_seed(0)
    rows = torch.tensor(logits).repeat(n, 1)
    return torch.bincount(next_tokens(rows, temperature, top_p), minlength=len(logits)).double() / n


def test_greedy_is_the_argmax():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 2.9, 0.0]])
    assert next_tokens(logits, 0.0, 1.0).tolist() == [1, 0]


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_draws_follow_the_tempered_softmax(temperature):
    logits = [1.0, 0.0, -1.0, 2.0, 0.5]
    expected = torch.softmax(torch.tensor(logits, dtype=torch.float64) / temperature, dim=0)
    # 40k draws: the standard error of a frequency is at most 0.0025
    assert torch.allclose(draw_frequencies(logits, temperature, 1.0), expected, atol=0.01)


def test_top_p_keeps_the_smallest_set_of_likeliest_tokens_holding_p():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log().tolist()
    # cumulative 0.5, 0.8: the first two tokens hold 0.7; renormalised 0.625 / 0.375
    assert torch.allclose(draw_frequencies(logits, 1.0, 0.7), torch.tensor([0.625, 0.375, 0, 0]).double(), atol=0.01)
    # 0.5 alone holds 0.5: the top token only
    assert draw_frequencies(logits, 1.0, 0.5).tolist() == [1.0, 0.0, 0.0, 0.0]
    # the top token stays whatever top_p is
    assert draw_frequencies(logits, 1.0, 0.01).tolist() == [1.0, 0.0, 0.0, 0.0]


def test_tokens_of_zero_probability_are_never_drawn():
    logits = [0.0, float("-inf"), 0.0, float("-inf")]
    freq = draw_frequencies(logits, 1.0, 1.0)
    assert freq[1] == 0 and freq[3] == 0 and abs(freq[0] - 0.5) < 0.01


def tiny_lm(eos: int) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=50,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    return GPT2LMHeadModel(config).eval()


def left_padded_prompts(pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 1, 1]])
    query = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 13, 14], [15, 16, 17, 18, 19]])
    return query.masked_fill(mask == 0, pad), mask


def test_greedy_decoding_equals_generate_with_eos_stops_and_pads():
    # pick as EOS a token that greedy decoding of row 0 emits early, so one row stops and the others go on
    probe = tiny_lm(eos=0)
    query, mask = left_padded_prompts(pad=0)
    first = sample(probe, SimpleNamespace(eos_token_id=None, pad_token_id=0), query, mask, 8, 0.0, 1.0, False)[0]
    eos = int(first[0, 2])
    model = tiny_lm(eos=eos)
    query, mask = left_padded_prompts(pad=eos)
    tokenizer = SimpleNamespace(eos_token_id=eos, pad_token_id=eos)
    response, response_mask = sample(model, tokenizer, query, mask, 8, 0.0, 1.0)
    with torch.no_grad():
        expected = model.generate(
            input_ids=query, attention_mask=mask, do_sample=False, max_new_tokens=8, pad_token_id=eos, eos_token_id=eos
        )[:, query.shape[1] :]
    assert response.tolist() == expected[:, : response.shape[1]].tolist()
    ended = response[0].tolist().index(eos)  # at most 2
    assert response_mask[0].tolist() == [1] * (ended + 1) + [0] * (response.shape[1] - ended - 1)  # EOS kept, then off
    assert response_mask[1:].sum() > 2 * (ended + 1)  # the other rows went on


def test_decoding_stops_when_every_row_has_ended():
    model = tiny_lm(eos=0)
    query, mask = left_padded_prompts(pad=0)
    greedy = sample(model, SimpleNamespace(eos_token_id=None, pad_token_id=0), query, mask, 3, 0.0, 1.0, False)[0]
    eos = int(greedy[0, 0])
    model.config.eos_token_id = eos
    one_row = query[:1], mask[:1]
    response, response_mask = sample(model, SimpleNamespace(eos_token_id=eos, pad_token_id=eos), *one_row, 8, 0.0, 1.0)
    assert response.shape == (1, 1) and response_mask.tolist() == [[1]]
