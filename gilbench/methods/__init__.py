"""The built-in methods, one file each, registered through the same entry points a third-party plugin uses
(pyproject.toml, group ``gilbench.methods``): gil.py (and its ablations), ppo.py, ppo_kl.py, ppo_ptx.py,
rloo.py, grpo.py, dpo.py, sft.py."""
