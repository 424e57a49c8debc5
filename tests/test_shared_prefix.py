"""A batch's shared prompt opening run once (gilbench.models.shared_prefix): the same log-probs, values, hidden
states and gradients as running every row whole, up to float rounding; and the prefix found and cut right."""

from __future__ import annotations

import pytest
import torch

from gilbench.data.format import format_prompt
from gilbench.models.heads import SharedValueHead, ValueModel
from gilbench.models.presets import load_causal_lm
from gilbench.models.shared_prefix import ATTENTION, common_prefix_length, drop_prefix, full_inputs, supports
from gilbench.rl.model_setup import recompute_activations, set_attention
from gilbench.rl.rollout import critic_forward, policy_and_values, response_logprobs, sample, tokenize_prompts

OPENING = "Answer in one short sentence, please: "
QUESTIONS = ["what's your favourite game?", "hi", "if you could live anywhere, where would it be and why?", "cats?"]


def test_common_prefix_of_left_padded_prompts():
    # rows: [pad pad 7 8 9 1 2], [7 8 9 1 2 3 4], [pad 7 8 9 1 5 6]: 7 8 9 1 shared; row 0 keeps its last token
    query = torch.tensor([[0, 0, 7, 8, 9, 1, 2], [7, 8, 9, 1, 2, 3, 4], [0, 7, 8, 9, 1, 5, 6]])
    mask = (torch.arange(7)[None] >= torch.tensor([[2], [0], [1]])).long()
    assert common_prefix_length(query, mask) == 4
    rest, rest_mask = drop_prefix(query, mask, 4)
    assert rest.tolist() == [[0, 0, 2], [2, 3, 4], [0, 5, 6]]
    assert rest_mask.tolist() == [[0, 0, 1], [1, 1, 1], [0, 1, 1]]
    # positions go on from the prefix; left pads stay at 0, a padded tail goes on from its row's last token
    response, response_mask = torch.tensor([[5, 0], [5, 6], [5, 6]]), torch.tensor([[1, 0], [1, 1], [1, 1]])
    _, _, positions = full_inputs(rest, rest_mask, response, response_mask, offset=4)
    assert positions.tolist() == [[0, 0, 4, 5, 5], [4, 5, 6, 7, 8], [0, 4, 5, 6, 7]]


def test_pad_columns_no_row_uses_are_dropped():
    # a minibatch keeps its batch's width: here every row has at least two pads
    query = torch.tensor([[0, 0, 0, 7, 8, 9, 1, 2], [0, 0, 7, 8, 9, 1, 2, 3]])
    mask = (query != 0).long()
    rest, rest_mask = drop_prefix(query, mask, 4)
    assert rest.tolist() == [[0, 2], [2, 3]] and rest_mask.tolist() == [[0, 1], [1, 1]]
    rest, rest_mask = drop_prefix(query, mask, 0)
    assert rest.tolist() == [[0, 7, 8, 9, 1, 2], [7, 8, 9, 1, 2, 3]]


def test_no_prefix_when_short_or_single_row():
    query, mask = torch.tensor([[1, 2, 3, 4, 5, 6]]), torch.ones(1, 6, dtype=torch.long)
    assert common_prefix_length(query, mask) == 0  # one row: nothing to share
    two = torch.tensor([[1, 2, 3, 9, 9, 9], [1, 2, 3, 8, 8, 8]])
    assert common_prefix_length(two, torch.ones_like(two)) == 0  # 3 tokens: under MIN_PREFIX
    # every row keeps at least one token of its own, even when one prompt is another's start
    same = torch.tensor([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])
    assert common_prefix_length(same, torch.ones_like(same)) == 5


def _batch(tokenizer, unused_pads: int = 0):
    """Left-padded prompts sharing OPENING, with ``unused_pads`` more pad columns (a minibatch of a wider batch)."""
    torch.manual_seed(0)
    query, query_mask = tokenize_prompts(
        tokenizer, [format_prompt(tokenizer, OPENING + q) for q in QUESTIONS], 256, "cpu"
    )
    query = torch.cat([torch.full_like(query[:, :unused_pads], tokenizer.pad_token_id), query], dim=1)
    query_mask = torch.cat([torch.zeros_like(query_mask[:, :unused_pads]), query_mask], dim=1)
    response = torch.randint(5, 200, (len(QUESTIONS), 6))
    response_mask = torch.ones_like(response)
    response_mask[1, 4:] = 0  # a sample that stopped early
    return query, query_mask, response, response_mask


def _needs_support(model):
    if not supports(
        model
    ):  # e.g. transformers 5.0: GPT-2's LM head drops the attention's arguments (and set_attention warns)
        pytest.skip("this transformers release does not pass attention arguments through GPT-2: rows run whole")


def _outputs(model, batch, share: bool, checkpointing: bool):
    """Log-probs, shared-critic values and hidden states, parameter gradients, and a separate critic's values."""
    set_attention(model, "eager", "cpu", share)
    assert (model.config._attn_implementation == ATTENTION) == share
    model.train()
    if checkpointing:
        recompute_activations(model)
    model.zero_grad()
    head = SharedValueHead(model)
    torch.manual_seed(1)
    torch.nn.init.normal_(head.value_head.weight)  # a zero head would hide misplaced values
    logp, _, values, hidden = policy_and_values(model, head, *batch, 1.0, hidden_at="prompt")
    ((logp * batch[3]).sum() + values.sum() + hidden.square().sum()).backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    with torch.no_grad():
        critic = ValueModel.from_causal_lm(model)
        torch.manual_seed(2)
        torch.nn.init.normal_(critic.value_head.weight)
        critic_values, critic_hidden = critic_forward(critic, *batch, hidden_at="response")
        _, entropy = response_logprobs(model, *batch, with_entropy=True)
    return [logp.detach(), values.detach(), hidden.detach(), grads, critic_values, critic_hidden, entropy]


@pytest.mark.parametrize("checkpointing, unused_pads", [(False, 0), (True, 0), (False, 3)])
def test_shared_prefix_gives_the_same_numbers(checkpointing, unused_pads):
    model, tokenizer = load_causal_lm("tiny")
    _needs_support(model)
    batch = _batch(tokenizer, unused_pads)
    assert common_prefix_length(batch[0], batch[1]) >= len(OPENING)
    whole = _outputs(model, batch, share=False, checkpointing=checkpointing)
    shared = _outputs(model, batch, share=True, checkpointing=checkpointing)
    names = ["log-probs", "values", "hidden", "gradients", "critic values", "critic hidden", "entropy"]
    for name, a, b in zip(names, whole, shared):
        assert a.shape == b.shape, name
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * float(a.abs().max()), msg=name)


def test_lora_policy_and_its_reference_share_the_prefix():
    pytest.importorskip("peft")
    from gilbench.models.presets import apply_lora

    model, tokenizer = load_causal_lm("tiny")
    _needs_support(model)
    batch = _batch(tokenizer)
    results = []
    for share in (False, True):
        set_attention(model, "eager", "cpu", share)
        torch.manual_seed(3)
        policy = apply_lora(model, r=4, alpha=8)
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(param)  # adapters that change the output, so enabled != disabled
        with torch.no_grad():
            with policy.disable_adapter():
                reference = response_logprobs(policy, *batch)
            results.append((response_logprobs(policy, *batch), reference))
        model = policy.unload()
    (policy_whole, reference_whole), (policy_shared, reference_shared) = results
    assert (policy_whole - reference_whole).abs().max() > 1e-3
    torch.testing.assert_close(policy_shared, policy_whole, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(reference_shared, reference_whole, rtol=1e-4, atol=1e-4)


def test_sampling_with_a_shared_prefix_draws_the_same_tokens():
    model, tokenizer = load_causal_lm("tiny")
    _needs_support(model)
    query, query_mask, _, _ = _batch(tokenizer)
    drawn = []
    for share in (False, True):
        set_attention(model, "eager", "cpu", share)
        torch.manual_seed(4)
        drawn.append(sample(model.eval(), tokenizer, query, query_mask, 12, 1.0, 1.0))
    assert drawn[0][0].tolist() == drawn[1][0].tolist()
    assert drawn[0][1].tolist() == drawn[1][1].tolist()
