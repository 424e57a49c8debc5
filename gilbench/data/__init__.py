"""Task data: prompts, SFT text and preference pairs, loaded from the hub, local files or pip-shipped corpora."""

from gilbench.data.types import EvalSplit, PreferencePair, Prompt, SFTExample, TaskData

__all__ = ["Prompt", "PreferencePair", "SFTExample", "EvalSplit", "TaskData"]
