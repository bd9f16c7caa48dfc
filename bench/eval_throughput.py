"""Evaluation throughput (samples/s) of the transformers rollout engine on the smoke model,
batched vs unbatched, measured in one run on the same samples.

    python bench/eval_throughput.py [--n 32] [--batch-size 8] [--max-new-tokens 16] [--benchmark mathvista]

Both settings run ``evals.run`` end to end (generation + scoring + records) into fresh
directories with greedy decoding; the model is loaded once and shared. Prints a table and one
JSON line with the ratio.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tabulate import tabulate  # noqa: E402

import evals  # noqa: E402
from harness.models import load_model, smoke_model_path  # noqa: E402
from harness.rollout.hf import HFRolloutEngine  # noqa: E402


def measure(bundle, bench: str, n: int, batch_size: int, max_new_tokens: int, repeats: int) -> float:
    """Best samples/s over ``repeats`` runs."""
    best = 0.0
    for _ in range(repeats):
        engine = HFRolloutEngine(bundle, batch_size=batch_size)
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            s = evals.run(bundle.path, bench, out_dir=d, engine=engine, source="smoke", smoke_n=n,
                          batch_size=batch_size, max_new_tokens=max_new_tokens, progress=False)
            dt = time.perf_counter() - t0
        best = max(best, s[bench]["n"] / dt)
    return best


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", default="mathvista")
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--kind", default="qwen2_5_vl")
    args = p.parse_args(argv)
    bundle = load_model(smoke_model_path(args.kind), trainable=False)
    measure(bundle, args.benchmark, 4, args.batch_size, args.max_new_tokens, 1)     # warm-up
    unbatched = measure(bundle, args.benchmark, args.n, 1, args.max_new_tokens, args.repeats)
    batched = measure(bundle, args.benchmark, args.n, args.batch_size, args.max_new_tokens, args.repeats)
    print(tabulate([("unbatched", 1, f"{unbatched:.2f}"), ("batched", args.batch_size, f"{batched:.2f}")],
                   headers=["setting", "batch size", "samples/s"]))
    result = {"benchmark": args.benchmark, "model": f"smoke:{args.kind}", "n": args.n,
              "max_new_tokens": args.max_new_tokens, "unbatched_samples_per_s": round(unbatched, 3),
              "batched_samples_per_s": round(batched, 3), "batch_size": args.batch_size,
              "speedup": round(batched / unbatched, 3)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
