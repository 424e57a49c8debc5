"""Sampling responses and the per-token quantities PPO needs, one forward pass per model.

Layout of a batch: ``query`` [B, P] left-padded prompts, ``response`` [B, R] right-padded samples.
Their concatenation is what every model reads; the logit at position P-1+t predicts response token t.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from gilbench.models.heads import head_values
from gilbench.models.shared_prefix import positions_after, run_on, split_prefix
from gilbench.rl.core import token_logprobs, token_logprobs_and_entropy

# The KV cache's name in model outputs and forward arguments: `cache` in recent transformers, `past_key_values`
# in older releases (5.17 among them): read it off the output class rather than guess from a version number.
CACHE = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


@dataclass
class Rollout:
    """One batch of trajectories. Tensors are [B] or [B, R] over response tokens."""

    prompts: list  # gilbench.data.Prompt
    query: torch.Tensor
    query_mask: torch.Tensor
    response: torch.Tensor
    mask: torch.Tensor
    texts: list[str]
    scores: torch.Tensor  # reward-model score (after optional normalisation/clipping)
    raw_scores: torch.Tensor  # reward-model score as given
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    kl: torch.Tensor  # per-token KL estimate
    entropy: torch.Tensor
    values: torch.Tensor | None = None  # the critic's values (None: the method has no critic)
    critic_hidden: torch.Tensor | None = (
        None  # critic hidden state at the last response token [B, H], if the method asked
    )
    rewards: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None  # value targets (None without a critic)

    def __len__(self) -> int:
        return self.response.shape[0]

    def select(self, idx: torch.Tensor) -> Rollout:
        ids = idx.tolist()
        fields = {
            k: (v[idx] if torch.is_tensor(v) else v) for k, v in vars(self).items() if k not in ("prompts", "texts")
        }
        return Rollout(prompts=[self.prompts[i] for i in ids], texts=[self.texts[i] for i in ids], **fields)


def rollout_rows(batch: Rollout, seq_kl: torch.Tensor, step: int) -> list[dict]:
    """rollouts.jsonl rows: what the policy said at this step, with its score, KL and length."""
    lengths, scores, kls = batch.mask.sum(dim=1).tolist(), batch.raw_scores.tolist(), seq_kl.tolist()
    return [
        {
            "step": step,
            "prompt_id": p.id,
            "prompt": p.text,
            "group": p.group,
            "response": text,
            "score": score,
            "kl": kl,
            "length": int(length),
        }
        for p, text, score, kl, length in zip(batch.prompts, batch.texts, scores, kls, lengths)
    ]


def chunks(n: int, size: int) -> list[slice]:
    """Row slices of ``size`` covering ``n`` rows: the unit of every forward pass over a batch (rl.forward_batch_size)."""
    return [slice(i, i + size) for i in range(0, n, size)]


def tokenize_prompts(tokenizer, texts: list[str], max_length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded, left-truncated prompt ids (the end of a prompt matters most for generation)."""
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    enc = tokenizer(
        texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt", add_special_tokens=False
    )
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


def response_mask_from_ids(response: torch.Tensor, eos_token_id: int | None) -> torch.Tensor:
    """1 up to and including the first EOS, 0 after it (the decoding loop pads finished rows)."""
    if eos_token_id is None:
        return torch.ones_like(response)
    is_eos = response == eos_token_id
    after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
    return (~after_eos).long()


def next_tokens(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """One token per row from float32 ``logits`` [B, V]: argmax at temperature 0, else a draw from
    softmax(logits / temperature), cut to the smallest set of most likely tokens holding ``top_p`` of the mass.

    Draws by inverting the cumulative distribution with one uniform number per row (float64 sums, so the tail of
    a 49k-token vocabulary keeps its mass): about 1 ms for 16 rows where ``torch.multinomial`` spends 16 ms.
    """
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1).double()
    order = None
    if top_p < 1.0:
        probs, order = probs.sort(dim=-1, descending=True)
        mass_before = probs.cumsum(dim=-1) - probs
        probs = probs.masked_fill(mass_before >= top_p, 0.0)  # the top token always stays (its mass_before is 0)
    cdf = probs.cumsum(dim=-1)
    u = torch.rand(len(cdf), 1, dtype=cdf.dtype, device=cdf.device) * cdf[:, -1:]
    picked = torch.searchsorted(cdf, u, right=True).clamp(max=cdf.shape[1] - 1)  # right=True: zero-mass never wins
    return (picked if order is None else order.gather(1, picked)).squeeze(1)


@torch.no_grad()
def sample(
    policy,
    tokenizer,
    query,
    query_mask,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    stop_at_eos: bool = True,
):
    """Sample responses with the KV cache; returns (response ids [B, R], response mask [B, R]).

    Our own decoding loop rather than ``generate``: on CPU the per-token sampling and logits processors of
    ``generate`` cost as much as a third of the decode step. Rows that emitted EOS are padded; the loop stops
    when every row has (``stop_at_eos=False``: fixed-length samples, EOS is an ordinary token)."""
    eos = tokenizer.eos_token_id if stop_at_eos else None
    pad = tokenizer.pad_token_id
    query, mask, offset, shared = split_prefix(policy, query, query_mask, logits_to_keep=1)
    positions = positions_after(mask, offset)
    out = policy(
        input_ids=query, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1, **shared
    )
    if shared:
        shared["shared_prefix"].check_read(policy)
    done = torch.zeros(len(query), dtype=torch.bool, device=query.device)
    tokens = []
    for t in range(max_new_tokens):
        token = next_tokens(out.logits[:, -1].float(), temperature, top_p)
        tokens.append(torch.where(done, torch.full_like(token, pad), token))
        if eos is not None:
            done = done | (token == eos)
            if done.all():
                break
        if t == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        positions = positions[:, -1:] + 1
        out = policy(
            input_ids=tokens[-1][:, None],
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{CACHE: getattr(out, CACHE)},
            **shared,  # the cache holds the rows' own keys and values; the prefix's come with every step
        )
    response = torch.stack(tokens, dim=1)
    return response, response_mask_from_ids(response, eos)


def response_logprobs(
    model,
    query,
    query_mask,
    response,
    response_mask,
    temperature: float = 1.0,
    with_entropy: bool = False,
    with_hidden: bool = False,
):
    """Float32 log-probs of the response tokens under ``model`` (logits scaled by the sampling temperature);
    then the entropies if ``with_entropy``, and the final hidden states [B, T, H] if ``with_hidden`` (for a value
    head on the policy's trunk, ``model.critic=shared``).

    One forward; the vocabulary head runs only where it predicts a response token, and the log-softmax is
    fused with the gather (``token_logprobs``), so no float32 [B, R, V] tensor is built.
    """
    # Only the last R+1 positions predict response tokens: skip the LM head (vocab-sized) over the prompt.
    out, _ = run_on(
        model,
        query,
        query_mask,
        response,
        response_mask,
        logits_to_keep=response.shape[1] + 1,
        output_hidden_states=with_hidden,
    )
    logits = out.logits[:, :-1]
    temperature = temperature if temperature > 0 else 1.0  # greedy rollouts: the model's own distribution
    if with_entropy:  # the rollout's forward: one pass over the vocabulary for both
        if torch.is_grad_enabled():
            raise ValueError("with_entropy is for forwards without a gradient (the rollout's)")
        result = list(token_logprobs_and_entropy(logits, response, temperature))
    else:
        result = [token_logprobs(logits, response, temperature)]
    if with_hidden:
        result.append(out.hidden_states[-1])  # after the final norm: what the LM head reads
    return result[0] if len(result) == 1 else tuple(result)


def critic_forward(critic, query, query_mask, response, response_mask, hidden_at: str = "response"):
    """Values of the states before each response token, and the hidden state at the last response token (or at
    the last prompt token: ``hidden_at="prompt"``)."""
    (values, hidden), query_length = run_on(critic, query, query_mask, response, response_mask)
    return response_values(values, hidden, query_length, response_mask, hidden_at)


def policy_and_values(
    policy,
    critic,
    query,
    query_mask,
    response,
    response_mask,
    temperature: float,
    with_entropy=False,
    policy_grad=True,
    hidden_at: str = "response",
):
    """The policy's response log-probs (entropies if ``with_entropy``, else None) and, with a critic, its values
    and hidden states at ``hidden_at`` (else None, None): one forward when the critic shares the policy's trunk,
    two if not. ``policy_grad=False`` runs the policy without a gradient while the critic keeps one (critic
    warm-up; on a shared trunk only the head then learns)."""
    args = (query, query_mask, response, response_mask)
    shared = critic is not None and critic.shares_policy_trunk
    with torch.set_grad_enabled(torch.is_grad_enabled() and policy_grad):
        out = response_logprobs(policy, *args, temperature=temperature, with_entropy=with_entropy, with_hidden=shared)
    out = out if isinstance(out, tuple) else (out,)
    logp, entropy = out[0], out[1] if with_entropy else None
    if critic is None:
        return logp, entropy, None, None
    if shared:
        hidden = out[-1]
        values = head_values(critic.value_head, hidden)
        query_length = hidden.shape[1] - response.shape[1]  # shorter than query's if a prompt prefix was shared
        return (logp, entropy, *response_values(values, hidden, query_length, response_mask, hidden_at))
    return (logp, entropy, *critic_forward(critic, *args, hidden_at=hidden_at))


def response_values(values, hidden, query_length: int, response_mask, hidden_at: str = "response"):
    """From per-token values and hidden states over prompt + response: the values of the states before each
    response token [B, R] and the hidden state [B, H] at the last response token, or with ``hidden_at="prompt"``
    at the last prompt token (prompts are left-padded, so position P-1 in every row: a function of the prompt
    alone, whatever was sampled)."""
    if hidden_at == "prompt":
        return values[:, query_length - 1 : -1], hidden[:, query_length - 1]
    last = query_length + response_mask.sum(dim=1).clamp(min=1) - 1
    last_hidden = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    return values[:, query_length - 1 : -1], last_hidden


def repetition_rate(response: torch.Tensor, mask: torch.Tensor, n: int = 3) -> float:
    """Share of a response's token n-grams that repeat an earlier n-gram of the same response."""
    repeats = total = 0
    for row, m in zip(response.tolist(), mask.sum(dim=1).tolist()):
        grams = [tuple(row[i : i + n]) for i in range(max(0, int(m) - n + 1))]
        total += len(grams)
        repeats += len(grams) - len(set(grams))
    return repeats / total if total else 0.0
