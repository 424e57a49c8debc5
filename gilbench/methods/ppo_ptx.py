"""PPO-ptx (InstructGPT): PPO w/ KL plus a language-modelling loss on reference text in every update.

The extra term, ptx_coef * LM loss on a batch of that text, pulls the policy back toward a distribution it should
keep (InstructGPT's pretraining mix) and so reduces the "alignment tax". Which text: with an SFT stage, the task's
SFT examples (the distribution the start policy was fitted to); without one the start policy is the base model,
and human SFT replies would drag it *away* from its reference, so the text is the start policy's own responses to
the SFT prompts, sampled once per run (``ptx_source``).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from gilbench import register_method
from gilbench.data.types import Prompt, SFTExample
from gilbench.files import atomic_write_text
from gilbench.rl.trainer import RLMethod
from gilbench.stages.generate import generate_split, rollout_sampling
from gilbench.stages.sft import encode_sft, lm_loss
from gilbench.store import PTX_REFERENCE


@dataclass
class PPOPtxConfig:
    ptx_coef: float = 0.5  # weight of the language-modelling loss added to the policy loss
    ptx_batch_size: int = 4  # sequences per micro-batch for that loss
    ptx_max_length: int = 192  # tokens per sequence
    ptx_source: str = "auto"  # sft (the task's SFT text) | reference (the start policy's samples) | auto: sft when the SFT stage ran, else reference
    ptx_examples: int = 256  # reference text: SFT prompts the start policy answers once per run


@register_method("ppo-ptx")
class PPOPtx(RLMethod):
    """PPO w/ KL plus ptx_coef x language-model loss on the start policy's distribution (InstructGPT)."""

    Config = PPOPtxConfig

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.ptx = ctx.method_cfg
        source = self.ptx.ptx_source
        if source == "auto":
            source = "sft" if ctx.cfg.sft.enabled else "reference"
        examples = ctx.task.sft if source == "sft" else self.reference_text(ctx)
        ctx.summary["ptx_source"] = source
        self.ptx_data = encode_sft(self.tokenizer, examples, ctx.task.prompt_format, self.ptx.ptx_max_length)
        self.ptx_rng = random.Random(ctx.cfg.seed)

    def reference_text(self, ctx) -> list[SFTExample]:
        """The start policy's responses to ``ptx_examples`` SFT prompts (seeded choice), sampled as in rollouts."""
        path = ctx.run_dir / PTX_REFERENCE
        if not path.exists():  # setup runs before a resume restores the policy: this is the start policy
            texts = sorted({ex.prompt for ex in ctx.task.sft})
            random.Random(ctx.cfg.seed).shuffle(texts)
            prompts = [Prompt(str(i), t) for i, t in enumerate(texts[: self.ptx.ptx_examples])]
            rl = self.rl
            policy = self.acc.unwrap_model(self.policy)
            ctx.log(f"[gilbench] ppo-ptx: the start policy answers {len(prompts)} SFT prompts for the ptx text")
            rows = generate_split(
                policy, self.tokenizer, prompts, rollout_sampling(rl), ctx.task.prompt_format, self.acc.device,
                rl.max_prompt_length, ctx.cfg.seed,
            )  # fmt: skip
            lines = [json.dumps({"prompt": r["prompt"], "response": r["response"]}) + "\n" for r in rows]
            atomic_write_text(path, "".join(lines))
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [SFTExample(r["prompt"], r["response"]) for r in rows if r["response"]]

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
