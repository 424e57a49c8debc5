"""A run that finishes in seconds on a CPU (the tiny model, 8 prompts a step, 8 new tokens, small SFT and reward
stages) as command-line flags: the sweep test and benchmarks/audit_bad_inputs.py use them. Each caller adds its own
``rl.steps``. (conftest.tiny_config sets the same sizes on a RunConfig.)"""

from __future__ import annotations

TINY_SETTINGS = [
    "sft.max_examples=16",
    "sft.batch_size=8",
    "sft.max_length=64",
    "rm.max_pairs=16",
    "rm.batch_size=8",
    "rm.max_length=64",
    "rl.rollout_batch_size=8",
    "rl.minibatch_size=4",
    "rl.micro_batch_size=4",
    "rl.max_new_tokens=8",
    "rl.max_prompt_length=48",
    "rl.ppo_epochs=1",
    "generate.max_new_tokens=8",
    "generate.max_prompts=2",
]


def set_flags(settings: list[str]) -> list[str]:
    """``--set KEY=VALUE`` for each setting, in order (a later one wins)."""
    return [flag for kv in settings for flag in ("--set", kv)]


def tiny_flags(output_dir, settings: list[str]) -> list[str]:
    """The flags of a tiny-model run on the CPU that writes into ``output_dir``, with ``settings`` as ``--set``."""
    return ["--model", "tiny", "--device", "cpu", "--output-dir", str(output_dir), *set_flags(settings)]
