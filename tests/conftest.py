"""Shared test fixtures: a toy task made in code and tiny-model run configs. Nothing here reads ../shared."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from gilbench import register_task  # noqa: E402
from gilbench.config import RunConfig  # noqa: E402
from gilbench.data.types import EvalSplit, PreferencePair, Prompt, SFTExample, TaskData  # noqa: E402
from gilbench.resolve import config_for_method  # noqa: E402

torch.set_num_threads(1)  # tiny models: threads cost more than they give, and CI machines are shared

# The device of the tiny-model runs: cpu here and in CI; a GPU machine reruns the loop tests with cuda
# (benchmarks/gpu_check.sh).
TEST_DEVICE = os.environ.get("GILBENCH_TEST_DEVICE", "cpu")

TOPICS = {
    "pets": ["cats", "dogs", "fish", "birds", "rabbits", "horses"],
    "food": ["bread", "pasta", "soup", "rice", "cake", "tea"],
}


def toy_task(seed: int = 0, limit: int | None = None, data_dir: str | None = None) -> TaskData:
    """Two groups of short questions; preferred replies are friendly and on topic, rejected ones curt."""
    prompts, sft, pairs = [], [], []
    for group, things in TOPICS.items():
        for i, thing in enumerate(things):
            for j, q in enumerate(
                [f"What do you think about {thing}?", f"Tell me about {thing}.", f"Do you like {thing}?"]
            ):
                prompts.append(Prompt(id=f"{group}-{i}-{j}", text=q, group=group))
                good = f"I really like {thing}, they are great!"
                sft.append(SFTExample(prompt=q, response=good))
                pairs.append(PreferencePair(prompt=q, chosen=good, rejected="no.", group=group))
    held_out = [
        Prompt(id="id-0", text="What about cheese?", group="food"),
        Prompt(id="id-1", text="What about mice?", group="pets"),
    ]
    ood = [
        Prompt(id="ood-0", text="How do rockets fly?", group="space"),
        Prompt(id="ood-1", text="Why is the sky blue?", group="space"),
    ]
    n = limit or len(prompts)
    return TaskData(
        name="toy",
        rl_prompts=prompts[:n],
        sft=sft[:n],
        pairs_train=pairs[: max(4, n - 4)],
        pairs_val=pairs[-4:],
        eval_splits=[EvalSplit("id:test", "id", held_out), EvalSplit("ood:space", "ood", ood)],
        notes={"seed": seed},
    )


register_task("toy")(toy_task)


def tiny_config(tmp_path, method: str = "ppo-kl", steps: int = 3, **rl) -> RunConfig:
    """A run that finishes in seconds on a CPU: tiny model, 8 prompts a step, 8 new tokens."""
    cfg = config_for_method(method, task="toy", seed=0, output_dir=str(tmp_path / "runs"), device=TEST_DEVICE)
    cfg.model.policy = "tiny"
    cfg.mixed_precision = "no"  # the same numbers on every machine (auto would pick bf16 where the CPU has it)
    cfg.sft.max_examples, cfg.sft.batch_size, cfg.sft.max_length = 16, 8, 64
    cfg.rm.max_pairs, cfg.rm.batch_size, cfg.rm.max_length = 16, 8, 64
    cfg.rl.steps, cfg.rl.rollout_batch_size, cfg.rl.minibatch_size, cfg.rl.micro_batch_size = steps, 8, 4, 4
    cfg.rl.max_new_tokens, cfg.rl.max_prompt_length, cfg.rl.ppo_epochs, cfg.rl.checkpoint_every = 8, 48, 2, 1
    cfg.generate.max_new_tokens, cfg.generate.max_prompts = 8, 2
    for key, value in rl.items():
        setattr(cfg.rl, key, value)
    return cfg


@pytest.fixture
def tiny_cfg(tmp_path):
    return lambda method="ppo-kl", steps=3, **rl: tiny_config(tmp_path, method, steps, **rl)
