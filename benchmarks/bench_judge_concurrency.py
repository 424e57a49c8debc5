#!/usr/bin/env python
"""Judge throughput: `compare` against a local OpenAI-compatible server that answers after a fixed delay.

    python benchmarks/bench_judge_concurrency.py                 # 200 pairs, 200 ms a reply, concurrency 1 vs 8
    python benchmarks/bench_judge_concurrency.py --pairs 50 --delay 0.1

Each pair is judged in both orders, so 200 pairs are 400 requests. Three runs, each in a fresh cache except the
last: concurrency 1, concurrency N, then the concurrency-N run again (it should be answered by the cache and make
zero requests). Only 127.0.0.1 is contacted. Prints a readable summary and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from judge_server import JudgeServer  # noqa: E402

from gilbench.eval.compare import compare  # noqa: E402
from gilbench.eval.judges import JudgeContext, build_judge  # noqa: E402


def write_runs(root: Path, pairs: int) -> tuple[Path, Path]:
    dirs = []
    for side, method in enumerate(("gil", "ppo")):
        d = root / "bench" / method / "seed0" / "generations"
        d.mkdir(parents=True)
        rows = [
            {
                "id": f"p{i}",
                "prompt": f"Question number {i}: what should I cook tonight?",
                "group": f"g{i % 2}",
                "response": (f"GOOD idea {i}: a soup" if (i + side) % 2 else f"plain reply {i} from {method}"),
                "length": 5,
                "split": "id:test",
                "distribution": "id",
                "method": method,
                "seed": 0,
            }
            for i in range(pairs)
        ]
        (d / "id_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        dirs.append(d.parent)
    return dirs[0], dirs[1]


def timed(server: JudgeServer, a: Path, b: Path, output_dir: Path, concurrency: int) -> dict:
    opts = {"base_url": server.url, "api_key_env": "BENCH_JUDGE_KEY", "timeout": 30.0}
    judge = build_judge("openai:bench-judge", JudgeContext(task="bench", output_dir=output_dir, options=opts))
    before, start = server.count, time.perf_counter()
    res = compare([a], [b], judge, concurrency=concurrency, progress=False, log=lambda m: None)
    return {
        "seconds": time.perf_counter() - start,
        "requests": server.count - before,
        "pairs": res["n_items"],
        "max_in_flight": server.max_in_flight,
        "win": res["splits"][0]["win"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=200)
    p.add_argument("--delay", type=float, default=0.2, help="server seconds per reply")
    p.add_argument("--concurrency", type=int, default=8)
    args = p.parse_args()
    os.environ["BENCH_JUDGE_KEY"] = "bench-not-a-secret"
    with tempfile.TemporaryDirectory() as tmp, JudgeServer(delay=args.delay) as server:
        root = Path(tmp)
        a, b = write_runs(root / "runs", args.pairs)
        serial = timed(server, a, b, root / "store1", 1)
        server.max_in_flight = 0
        parallel = timed(server, a, b, root / "store8", args.concurrency)
        rerun = timed(server, a, b, root / "store8", args.concurrency)
    speedup = serial["seconds"] / parallel["seconds"]
    print(f"{args.pairs} pairs ({2 * args.pairs} requests), server delay {args.delay * 1000:.0f} ms")
    print(f"  concurrency 1:  {serial['seconds']:7.2f} s, {serial['requests']} requests")
    print(
        f"  concurrency {args.concurrency}:  {parallel['seconds']:7.2f} s, {parallel['requests']} requests, "
        f"at most {parallel['max_in_flight']} in flight; speed-up {speedup:.2f}x (ideal {args.concurrency}x)"
    )
    print(f"  rerun (cache):  {rerun['seconds']:7.2f} s, {rerun['requests']} requests")
    print(
        json.dumps(
            {
                "pairs": args.pairs,
                "delay_s": args.delay,
                "concurrency": args.concurrency,
                "seconds_c1": round(serial["seconds"], 3),
                f"seconds_c{args.concurrency}": round(parallel["seconds"], 3),
                "speedup": round(speedup, 2),
                "rerun_requests": rerun["requests"],
                "rerun_seconds": round(rerun["seconds"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
