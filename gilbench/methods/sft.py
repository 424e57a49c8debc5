"""SFT: the supervised starting policy itself, untouched by any preference training.

The pipeline fine-tunes the policy on the task's SFT text (cached, shared by every method on the same task,
model and seed); this method returns that model as it is, so its generations are scored exactly like every
other method's. It is the paper's "SFT" row: the baseline each alignment method has to improve on.
"""

from __future__ import annotations

from gilbench import register_method
from gilbench.method import Method, RunContext


@register_method("sft")
class SFT(Method):
    """The SFT policy, untrained by RL or preferences (the starting point every method is compared with)."""

    Config = None
    needs_reward_model = True  # evaluation scores its generations with the task's reward model

    def train(self, ctx: RunContext):
        policy, tokenizer = ctx.load_policy()
        ctx.summary["sft/path"] = str(ctx.sft_path)
        return policy, tokenizer
