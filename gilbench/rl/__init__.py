"""The shared PPO machinery: rollout, KL, advantages and the loop every RL method runs."""
