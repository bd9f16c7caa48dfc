"""Evaluation throughput (samples/s) of the transformers rollout engine on the smoke model,
batched vs unbatched, measured in one run on the same samples.

    python bench/eval_throughput.py [--n 32] [--batch-size 8] [--max-new-tokens 16] [--benchmark mathvista]
        [--repeats 3] [--out results/bench/eval_throughput-cpu.md]

Both settings run ``evals.run`` end to end (generation + scoring + records) into fresh
directories with greedy decoding; the model is loaded once and shared. The two settings alternate,
``repeats`` rounds, best of each kept (on a shared machine the best run is the least disturbed).
Prints a table and one JSON line with the ratio; ``--out`` also writes them as a Markdown record
with the device, date, command and core count.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402

import evals  # noqa: E402
from harness.models import load_model, smoke_model_path  # noqa: E402
from harness.rollout.hf import HFRolloutEngine  # noqa: E402


def measure(bundle, bench: str, n: int, batch_size: int, max_new_tokens: int) -> float:
    """Samples/s of one fresh ``evals.run``."""
    engine = HFRolloutEngine(bundle, batch_size=batch_size, progress=False)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        s = evals.run(bundle.path, bench, out_dir=d, engine=engine, source="smoke", smoke_n=n,
                      batch_size=batch_size, max_new_tokens=max_new_tokens, progress=False)
        dt = time.perf_counter() - t0
    return s[bench]["n"] / dt


def markdown(result: dict, command: str) -> str:
    """The committed record of one run."""
    cores = os.cpu_count()
    return (
        f"# bench/eval_throughput.py on the CPU ({datetime.date.today().isoformat()})\n\n"
        f"Device: {cores}-core {platform.machine()} CPU ({platform.processor() or 'unknown model'}), "
        f"torch {torch.__version__}, fp32, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
        f"the cores were shared with other jobs (load average {os.getloadavg()[0]:.1f} at the end), so "
        "absolute rates are low and noisy; the ratio is of the best of the alternating rounds.\n"
        f"Command: `{command}` ({result['model']}, {result['n']} {result['benchmark']} fixture rows, greedy, "
        f"{result['max_new_tokens']} new tokens; `evals.run` end to end — generation, scoring, records — both "
        "settings in one run, model loaded once).\n\n"
        "| setting | samples/s |\n|---|---|\n"
        f"| unbatched (batch 1) | {result['unbatched_samples_per_s']:.2f} |\n"
        f"| batched (batch {result['batch_size']}) | {result['batched_samples_per_s']:.2f} |\n\n"
        f"Ratio batched / unbatched: {result['speedup']:.2f}× (target ≥ 4×: "
        f"{'met' if result['speedup'] >= 4 else 'not met'}).\n"
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", default="mathvista")
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--kind", default="qwen2_5_vl")
    p.add_argument("--out", default=None, help="write the Markdown record here")
    args = p.parse_args(argv)
    bundle = load_model(smoke_model_path(args.kind), trainable=False)
    measure(bundle, args.benchmark, 4, args.batch_size, args.max_new_tokens)     # warm-up
    unbatched = batched = 0.0
    for _ in range(args.repeats):
        unbatched = max(unbatched, measure(bundle, args.benchmark, args.n, 1, args.max_new_tokens))
        batched = max(batched, measure(bundle, args.benchmark, args.n, args.batch_size, args.max_new_tokens))
    print(tabulate([("unbatched", 1, f"{unbatched:.2f}"), ("batched", args.batch_size, f"{batched:.2f}")],
                   headers=["setting", "batch size", "samples/s"]))
    result = {"benchmark": args.benchmark, "model": f"smoke:{args.kind}", "n": args.n,
              "max_new_tokens": args.max_new_tokens, "unbatched_samples_per_s": round(unbatched, 3),
              "batched_samples_per_s": round(batched, 3), "batch_size": args.batch_size,
              "speedup": round(batched / unbatched, 3)}
    print(json.dumps(result))
    if args.out:
        command = "python bench/eval_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])
        Path(args.out).write_text(markdown(result, command.strip()), encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
