"""gilbench: a benchmark harness for RLHF alignment methods (PPO family, DPO, Group Invariant Learning)."""

__version__ = "0.1.0"

from gilbench.errors import GilbenchError  # noqa: E402
from gilbench.registry import register_judge, register_method, register_model, register_task  # noqa: E402

__all__ = ["GilbenchError", "register_method", "register_task", "register_judge", "register_model", "__version__"]
