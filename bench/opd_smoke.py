"""Does plain on-policy distillation close the distance to the teacher? The smoke OPD recipe
(tiny Qwen2.5-VL student, the sharper tiny Qwen3 teacher, methods.opd smoke profile) over several
seeds; per seed the exact per-token reverse KL(pi_theta || pi_T) on the step's rollouts
(``rkl_full``) averaged over the first and over the last 3 steps, and the fall between them.
A smoke measurement of the training loop, not a claim about any paper.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/opd_smoke.py [--seeds 0 1 2] [--loss k1-reward] [--out results/bench/opd_smoke-cpu.md]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from harness.jsonl import read_jsonl


def run(seed: int, loss: str, root: Path) -> tuple[float, float]:
    from methods.opd.config import PROFILES, OPDConfig
    from methods.opd.trainer import train
    from methods.registry import load_method_config

    cfg = load_method_config(OPDConfig, PROFILES, "smoke", overrides={"seed": seed, "loss": loss})
    out = root / f"{loss}-{seed}"
    train(cfg, out)
    recs = read_jsonl(out / "metrics.jsonl")
    first = statistics.mean(r["rkl_full"] for r in recs[:3])
    last = statistics.mean(r["rkl_full"] for r in recs[-3:])
    return first, last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--loss", nargs="+", default=["k1-reward"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    lines = [f"{time.strftime('%Y-%m-%d')}; methods.opd smoke profile (30 steps, 8 prompts x 8 rollouts); "
             "rkl_full = exact per-token KL(student || teacher) on the step's rollouts", "",
             "| loss | seed | first 3 steps | last 3 steps | fall |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for loss in args.loss:
            falls = []
            for seed in args.seeds:
                first, last = run(seed, loss, Path(tmp))
                falls.append(first - last)
                lines.append(f"| {loss} | {seed} | {first:.3f} | {last:.3f} | {first - last:.3f} |")
            sd = statistics.stdev(falls) if len(falls) > 1 else 0.0
            lines.append(f"| {loss} | mean ± sd | | | {statistics.mean(falls):.3f} ± {sd:.3f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write(text + "\n\n")


if __name__ == "__main__":
    main()
