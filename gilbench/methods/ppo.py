"""PPO without a KL penalty: the paper's unstable "PPO" baseline.

Everything is the shared loop (gilbench/rl/trainer.py, RLMethod); the only change is kl_coef = 0, so nothing
holds the policy near the SFT model and reward hacking shows up in the stability tables.
"""

from gilbench import register_method
from gilbench.rl.trainer import RLMethod


@register_method("ppo")
class PPO(RLMethod):
    """PPO with no KL penalty to the reference (kl_coef = 0)."""

    defaults = {"rl.kl_coef": 0.0, "rl.adaptive_kl": False}
