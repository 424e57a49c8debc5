"""Would GIL's group head find groups better if it trained on the last K rollouts at once? A synthetic probe.

    python benchmarks/probe_group_window.py [--seeds 10] [--windows 1,2,4,8]

A stream of small batches (16 samples, 30 rollouts) with two planted groups: hidden states offset along one
direction (``signal``) and the groups' mean rewards ``gap`` apart, with noise of SD 1 (tests/test_gil.py: gap 1). One
head and one AdamW carry over from rollout to rollout, as in a GIL run; at each rollout the head takes GILConfig's
``group_steps`` on the last K batches, each z-scored and centred on its own (K = 1 is what GIL does). Prints the
mean NMI of the head's groups with the planted ones on 400 fresh samples, per (signal, gap) and K.
"""

from __future__ import annotations

import argparse
from collections import deque

import torch

from gilbench.methods.gil import GILConfig, GroupHead, normalized_mutual_info, standardise, train_group_head


def held_out_nmi(seed: int, signal: float, gap: float, window: int, batches: int = 30, B: int = 16, H: int = 64):
    gen = torch.Generator().manual_seed(seed)
    offset, direction = 3 * torch.randn(H, generator=gen), signal * torch.randn(H, generator=gen)

    def draw(n):
        labels = torch.randperm(n, generator=gen) % 2
        hidden = offset + (2 * labels[:, None] - 1) * direction + 0.5 * torch.randn(n, H, generator=gen)
        return hidden, gap / 2 * (2 * labels - 1).float() + torch.randn(n, generator=gen), labels

    cfg = GILConfig()
    head = GroupHead(H, 2, seed=seed, center=False)  # batches are centred here, each on its own mean
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.group_lr)
    memory = deque(maxlen=window)
    pooled_cfg = GILConfig(normalise_performance=False)  # rewards are z-scored per batch below
    for _ in range(batches):
        hidden, rewards, _ = draw(B)
        memory.append((hidden - hidden.mean(0), standardise(rewards)))
        train_group_head(
            head, optimizer, torch.cat([h for h, _ in memory]), torch.cat([r for _, r in memory]), pooled_cfg
        )
    hidden, _, labels = draw(400)
    with torch.no_grad():
        return normalized_mutual_info(head(hidden - hidden.mean(0)).argmax(1).numpy(), labels.numpy())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--windows", default="1,2,4,8")
    args = ap.parse_args()
    windows = [int(k) for k in args.windows.split(",")]
    torch.set_num_threads(1)
    for signal, gap in ((0.0, 1.0), (0.05, 1.0), (0.1, 0.5), (0.1, 1.0)):
        nmis = [sum(held_out_nmi(s, signal, gap, k) for s in range(args.seeds)) / args.seeds for k in windows]
        print(
            f"signal {signal:.2f} gap {gap:.2f} SD: " + " ".join(f"K={k} NMI {v:.3f}" for k, v in zip(windows, nmis)),
            flush=True,
        )


if __name__ == "__main__":
    main()
