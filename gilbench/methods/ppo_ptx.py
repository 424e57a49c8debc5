"""PPO-ptx (InstructGPT): PPO w/ KL plus a language-modelling loss on SFT text in every update.

The extra term, ptx_coef * LM loss on a batch of the task's SFT examples, pulls the policy toward the
supervised distribution and so reduces the "alignment tax" on other abilities.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from gilbench import register_method
from gilbench.rl.trainer import RLMethod
from gilbench.stages.sft import encode_sft, lm_loss


@dataclass
class PPOPtxConfig:
    ptx_coef: float = 0.5  # weight of the language-modelling loss added to the policy loss
    ptx_batch_size: int = 4  # SFT sequences per micro-batch for that loss
    ptx_max_length: int = 192  # tokens per SFT sequence


@register_method("ppo-ptx")
class PPOPtx(RLMethod):
    """PPO w/ KL plus ptx_coef x language-model loss on the task's SFT text (InstructGPT)."""

    Config = PPOPtxConfig

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.ptx = ctx.method_cfg
        self.ptx_data = encode_sft(self.tokenizer, ctx.task.sft, ctx.task.prompt_format, self.ptx.ptx_max_length)
        self.ptx_rng = random.Random(ctx.cfg.seed)

    def extra_loss(self, mb):
        if not self.ptx_data or self.ptx.ptx_coef == 0:
            return None, {}
        batch = self.ptx_rng.sample(self.ptx_data, min(self.ptx.ptx_batch_size, len(self.ptx_data)))
        loss = lm_loss(self.policy, batch, self.tokenizer.pad_token_id, self.acc.device)
        return self.ptx.ptx_coef * loss, {"loss/ptx": loss.item()}

    def method_state(self) -> dict:
        return {"ptx_rng": self.ptx_rng.getstate()}

    def load_method_state(self, state: dict) -> None:
        self.ptx_rng.setstate(state["ptx_rng"])
