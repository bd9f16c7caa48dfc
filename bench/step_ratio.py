"""Step time of VOLD's distillation options relative to a GRPO step, measured in one run.

Each arm trains the smoke VOLD stage-2 recipe (tiny Qwen2.5-VL student, tiny Qwen3 teacher) for
a few steps with identical rollout settings; the baseline arm is VOLD with ``beta = 0``, which is
GRPO exactly (tests/test_vold_loss.py). For every arm it reports the median over the steps after
the first of the whole step time and of the part after the rollout (old log-probs, teacher scoring, updates), and their ratios
to the GRPO arm. The full-vocabulary arms pay for the teacher's forward and the KL over the whole
vocabulary; before the method seam v2 they also ran a second student forward and backward inside
the loss, which this benchmark was written to measure.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/step_ratio.py [--steps 8] [--repeats 3] [--vocab smoke|qwen] [--out results/bench/step_ratio-cpu.md]
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ARMS = {
    "grpo (vold beta=0)": {"beta": 0.0},
    "vold k2": {"kl_estimator": "k2"},
    "vold full_reverse": {"kl_estimator": "full_reverse"},
    "vold full_forward": {"kl_estimator": "full_forward"},
}


VOCABS = ("qwen", "smoke")
"""``--vocab``: the real Qwen vocabulary of the smoke models (151,936-wide tiny models), or the small
offline BPE (~1.5k ids; tiny models built by ``harness.tiny.build_tiny_model(vocab="smoke")``)."""


def vocab_models(vocab: str, root: Path) -> dict[str, str]:
    """Student / teacher overrides for ``--vocab``."""
    if vocab == "qwen":
        return {"model": "smoke:qwen2_5_vl", "teacher": "smoke:qwen3"}
    from harness.tiny import build_tiny_model

    return {"model": str(build_tiny_model("qwen2_5_vl", root / "bpe_student", vocab="smoke")),
            "teacher": str(build_tiny_model("qwen3", root / "bpe_teacher", seed=1, vocab="smoke"))}


def run_arm(overrides: dict, steps: int, root: Path) -> tuple[float, float]:
    """Median (step seconds, update seconds) over steps 2..N of one fresh run."""
    from methods.vold import load_stage_config
    from methods.vold.trainer import train

    base = {"steps": steps, "val_every": 0, "save_every": steps, "prompts_per_step": 8, "num_generations": 4,
            "max_new_tokens": 32, "micro_batch_size": 8, "mini_batches_per_step": 2, "reward": "smoke-even-majority"}
    cfg = load_stage_config("rl", "smoke", {**base, **overrides})
    out = Path(tempfile.mkdtemp(dir=root))
    train(cfg, out)
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    shutil.rmtree(out, ignore_errors=True)
    step = [r["time_s"] for r in recs[1:]]
    update = [r["time_s"] - r.get("time_generate_s", 0.0) for r in recs[1:]]
    return statistics.median(step), statistics.median(update)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats of every arm")
    ap.add_argument("--out", default=None, help="write a Markdown table here")
    ap.add_argument("--label", default="", help="what code was measured (e.g. a revision)")
    ap.add_argument("--vocab", choices=VOCABS, default="qwen", help="tiny models' vocabulary")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="step_ratio-"))
    times: dict[str, list[tuple[float, float]]] = {a: [] for a in ARMS}
    models = vocab_models(args.vocab, root)
    for _ in range(args.repeats):
        for arm, ov in ARMS.items():
            times[arm].append(run_arm({**models, **ov}, args.steps, root))
    shutil.rmtree(root, ignore_errors=True)
    med = {a: (statistics.median(s for s, _ in v), statistics.median(u for _, u in v)) for a, v in times.items()}
    base_step, base_update = med["grpo (vold beta=0)"]
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [f"Revision {rev} {args.label}".rstrip() + f"; {platform.processor() or platform.machine()}, "
             f"torch threads 1; {args.vocab} vocabulary; {args.repeats} repeats x {args.steps} steps, median of steps 2..N; "
             f"{time.strftime('%Y-%m-%d')}", "",
             "| arm | step s | step / GRPO | after-rollout s | after-rollout / GRPO |", "|---|---|---|---|---|"]
    for arm, (s, u) in med.items():
        lines.append(f"| {arm} | {s:.3f} | {s / base_step:.2f} | {u:.3f} | {u / base_update:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            f.write(text + "\n\n")


if __name__ == "__main__":
    main()
