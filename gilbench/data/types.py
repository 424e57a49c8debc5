"""The plain records every task loader returns. Texts are unformatted: the prompt format is applied later,
per model (chat template or plain), so one task serves every model."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Prompt:
    id: str  # stable across runs; used to check leakage and to pair generations for judging
    text: str  # the user's message (or the article/post to summarise)
    group: str | None = None  # known group label (theme, subset), if the task has one


@dataclass(frozen=True)
class SFTExample:
    prompt: str
    response: str


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    group: str | None = None


@dataclass
class EvalSplit:
    name: str  # e.g. "id:test", "ood:beavertails"
    distribution: str  # "id" or "ood"
    prompts: list[Prompt]
    description: str = ""


@dataclass
class TaskData:
    """Everything one run needs from a task."""

    name: str
    rl_prompts: list[Prompt]  # prompts the RL methods sample from
    sft: list[SFTExample]  # supervised text for the SFT stage (and PPO-ptx)
    pairs_train: list[PreferencePair]  # reward-model (and DPO) training pairs
    pairs_val: list[PreferencePair]  # held-out pairs: reward-model pairwise accuracy
    eval_splits: list[EvalSplit] = field(default_factory=list)
    prompt_format: str = "chat"  # "chat": the tokenizer's chat template; "plain": "{prompt}" as is
    notes: dict = field(default_factory=dict)  # provenance recorded with the run (split seed, sources, counts)

    def sizes(self) -> dict:
        """How many items each part holds: the ``counts`` a loader records in its notes."""
        return {
            "rl_prompts": len(self.rl_prompts),
            "sft": len(self.sft),
            "pairs_train": len(self.pairs_train),
            "pairs_val": len(self.pairs_val),
            "eval": {s.name: len(s.prompts) for s in self.eval_splits},
        }

    def check_no_leakage(self) -> None:
        """No eval prompt may also be an RL or SFT training prompt."""
        from gilbench.errors import GilbenchError

        train_texts = {p.text.strip() for p in self.rl_prompts} | {e.prompt.strip() for e in self.sft}
        for split in self.eval_splits:
            leaked = [p.id for p in split.prompts if p.text.strip() in train_texts]
            if leaked:
                raise GilbenchError(
                    f"task {self.name}: {len(leaked)} prompts of eval split {split.name} also appear in training data (e.g. {leaked[:3]})"
                )
