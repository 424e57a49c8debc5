"""The cached stages around the RL method: SFT, reward model, and generation on the eval splits."""
