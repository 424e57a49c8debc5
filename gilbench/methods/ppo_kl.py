"""PPO with a per-token KL penalty to the frozen SFT reference ("PPO w/ KL", Ziegler et al. 2019).

The reward of token t is -kl_coef * KL_t, plus the reward-model score at the last token; kl_coef is
fixed (rl.kl_coef) or driven toward rl.kl_target by the adaptive controller (rl.adaptive_kl=true).
This is the shared loop exactly as it stands.
"""

from gilbench import register_method
from gilbench.rl.trainer import RLMethod


@register_method("ppo-kl")
class PPOWithKL(RLMethod):
    """PPO with a per-token KL penalty to the SFT reference (fixed or adaptive coefficient)."""
