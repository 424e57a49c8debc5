"""Reward-model pooling (gilbench.models.reward): mean over real tokens checked by hand on a tiny BERT built in
code, the recorded pooling survives save/load, refusals, and a tiny reward model learns separable pairs."""

import pytest
import torch

from gilbench.config import RewardModelConfig
from gilbench.data.types import PreferencePair
from gilbench.errors import GilbenchError
from gilbench.models import load_sequence_classifier
from gilbench.models.reward import RewardScorer, mean_pooled_scores, reward_pooling, reward_scores, set_reward_pooling

WORDS = ["good", "bad", "the", "reply", "is", "a", "question", "here", "fine", "awful", "very"]


def tiny_bert(seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    tokenizer = BertTokenizerFast(
        vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    )
    config = BertConfig(
        vocab_size=len(WORDS) + 5,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=1,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    return BertForSequenceClassification(config).eval(), tokenizer


def test_mean_pooling_is_the_mean_over_real_tokens():
    model, tok = tiny_bert()
    texts = ["good", "the reply is very fine here", "bad question"]
    batch = tok(texts, padding=True, return_tensors="pt")
    assert (batch.input_ids != tok.unk_token_id).all() and (
        batch.attention_mask == 0
    ).any()  # the batch really is padded
    with torch.no_grad():
        scores = mean_pooled_scores(model, batch.input_ids, batch.attention_mask)
        expected = []
        for text in texts:  # each row alone, unpadded: average its hidden states by hand
            ids = tok([text], return_tensors="pt").input_ids
            hidden = model.bert(input_ids=ids).last_hidden_state[0]
            expected.append(model.classifier(hidden.sum(0) / hidden.shape[0])[0])
        tok.padding_side = "left"
        left = tok(texts, padding=True, return_tensors="pt")
        shifted = mean_pooled_scores(model, left.input_ids, left.attention_mask)
    torch.testing.assert_close(scores, torch.stack(expected), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shifted, scores, atol=1e-5, rtol=1e-5)


def test_pooling_is_recorded_and_survives_save_and_load(tmp_path):
    model, tok = tiny_bert()
    assert reward_pooling(model) == "cls"  # a model without the field: how reward models saved before it scored
    assert set_reward_pooling(model, "mean") == "mean"
    batch = tok(["good reply", "bad"], padding=True, return_tensors="pt")
    with torch.no_grad():
        mean, cls = reward_scores(model, batch.input_ids, batch.attention_mask), model(**batch).logits[:, 0]
    assert not torch.allclose(mean, cls)
    model.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    loaded, _ = load_sequence_classifier(str(tmp_path / "rm"))
    assert reward_pooling(loaded) == "mean"
    with torch.no_grad():
        torch.testing.assert_close(reward_scores(loaded.eval(), batch.input_ids, batch.attention_mask), mean)


def test_auto_is_the_architectures_own_head():
    model, _ = tiny_bert()
    assert set_reward_pooling(model, "auto") == "cls"
    decoder, _ = load_sequence_classifier("tiny")
    assert set_reward_pooling(decoder, "auto") == "last"


def test_rm_cache_key_records_pooling_and_auto_keeps_earlier_keys():
    from dataclasses import asdict, replace

    from gilbench.config import RunConfig, stable_hash
    from gilbench.stages.cache import data_key, reward_backbone, rm_key

    cfg = RunConfig()
    # the config before the fields existed (rm.micro_batch_size at its default, 0, is left out the same way)
    earlier = {k: v for k, v in asdict(cfg.rm).items() if k not in ("pooling", "micro_batch_size")}
    assert rm_key(cfg) == stable_hash(data_key(cfg), reward_backbone(cfg), earlier, cfg.seed)
    keys = {rm_key(replace(cfg, rm=replace(cfg.rm, pooling=p))) for p in ("auto", "cls", "mean")}
    assert len(keys) == 3


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_decoder_refuses_encoder_pooling(pooling):
    decoder, _ = load_sequence_classifier("tiny")
    with pytest.raises(GilbenchError, match="rm.pooling=.*decoder.*--set rm.pooling=last"):
        set_reward_pooling(decoder, pooling)


def test_encoder_refuses_last_token():
    model, _ = tiny_bert()
    with pytest.raises(GilbenchError, match="encoder.*cls or mean"):
        set_reward_pooling(model, "last")


def test_mean_refuses_a_head_that_pools_itself():
    from transformers import RobertaConfig, RobertaForSequenceClassification

    config = RobertaConfig(
        vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=1
    )
    with pytest.raises(GilbenchError, match="pools inside its head.*rm.pooling=cls"):
        set_reward_pooling(RobertaForSequenceClassification(config), "mean")


def test_mean_pooled_reward_model_learns_separable_pairs():
    from accelerate import Accelerator

    from gilbench.stages.reward import train_reward_model

    model, tok = tiny_bert()
    set_reward_pooling(model, "mean")
    fillers = ["the reply is", "a question here", "very fine the", "is a reply", "here is the question"]

    scorer = RewardScorer(model, tok, max_length=32)
    # The preferred word is the one the untrained model scores lower, so it starts wrong on every pair.
    untrained = scorer.score(["the reply is"] * 2, ["is a reply good", "is a reply bad"])
    good, bad = ("good", "bad") if untrained[0] < untrained[1] else ("bad", "good")

    def pairs(n, offset):  # chosen ends in `good`, rejected in `bad`; the rest is shared noise
        return [
            PreferencePair(
                prompt=fillers[(i + offset) % 5],
                chosen=f"{fillers[(i * 3) % 5]} {good}",
                rejected=f"{fillers[(i * 3) % 5]} {bad}",
            )
            for i in range(n)
        ]

    stats = train_reward_model(
        scorer,
        pairs(64, 0),
        pairs(20, 2),
        RewardModelConfig(epochs=4, lr=1e-3, batch_size=8, pooling="mean"),
        Accelerator(cpu=True),
        seed=0,
    )
    assert stats["rm/val_accuracy_before"] <= 0.5 and stats["rm/val_accuracy"] >= 0.95
    assert stats["rm/loss_end"] < stats["rm/loss_start"] - 0.2


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_scores_come_back_in_the_order_given_whatever_the_batching(pooling):
    """More than a batch is scored in batches of similar length (less padding): each score must still be the one of
    its own (prompt, response), as scored alone."""
    model, tok = tiny_bert(seed=3)
    set_reward_pooling(model, pooling)
    prompts = ["the reply", "a question here is very fine", "good", "bad question", "here is the reply", "fine"] * 2
    responses = ["very good", "bad", "the reply is a question here fine good", "fine", "awful very awful", "is"] * 2
    scorer = RewardScorer(model, tok, max_length=32, batch_size=4)
    batched = scorer.score(prompts, responses)
    alone = torch.cat([scorer.score([p], [r]) for p, r in zip(prompts, responses)])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
    assert batched.shape == (12,) and batched.dtype == torch.float32
    assert len(set(batched[:6].tolist())) == 6  # distinct scores: a mix-up of rows would show
    assert scorer.score([], []).shape == (0,)
