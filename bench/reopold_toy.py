"""A controlled toy of REOPOLD's stability claim: with a teacher that assigns very low probability
to many of the student's tokens (heavy-tailed negative token rewards), does plain RKL do worse
than REOPOLD's clipping + masking? A smoke-scale measurement, reported whatever it shows.

Student ``smoke:qwen2`` (tiny random Qwen2), teacher ``smoke:qwen3_teacher`` (a tiny Qwen3 with a
7.5x wider lm_head: about 40% of the student's sampled tokens get ``R < c_0.3 = -1.72``), prompts
``smoke-learnable`` ("answer with the digit 3"). Both methods share every setting (8 prompts x 8
rollouts of 8 tokens, one update per step, lr, steps); RKL is ``methods.opd loss=rkl-sampled``
(the paper's baseline, gradient through R), REOPOLD its defaults with ``t_switch`` at a third of
the steps. Per seed:

- ``reward``: mean logged reward (``smoke-contains-answer``, not in the loss) over the last 5 steps;
- ``rkl before / after``: the exact per-token KL(student || teacher) on one fixed set of rollouts
  of the initial student (16 validation prompts x 4), for the initial and the final student;
- ``eval acc``: greedy accuracy of the final student on 32 validation prompts.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/reopold_toy.py [--seeds 0 1 2] [--steps 30] [--lr 1e-3] [--out results/bench/reopold_toy-cpu.md]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

STUDENT, TEACHER, DATA, REWARD = "smoke:qwen2", "smoke:qwen3_teacher", "smoke-learnable", "smoke-contains-answer"


def common(seed: int, steps: int, lr: float) -> dict[str, Any]:
    return {"model": STUDENT, "teacher": TEACHER, "teacher_dtype": "float32", "data": DATA, "reward": REWARD,
            "seed": seed, "steps": steps, "prompts_per_step": 8, "num_generations": 8, "mini_batches_per_step": 1,
            "micro_batch_size": 16, "max_new_tokens": 8, "rollout_batch_size": 8, "lr": lr, "warmup_steps": 0,
            "lr_schedule": "constant", "dtype": "float32", "autocast": None, "save_every": steps, "device": "cpu",
            "log_full_rkl": False}


def train_one(method: str, seed: int, steps: int, lr: float, root: Path) -> Path:
    from methods.registry import load_method_config

    out = root / f"{method}-{seed}"
    if method == "rkl":
        from methods.opd.config import PROFILES, OPDConfig
        from methods.opd.trainer import train

        cfg = load_method_config(OPDConfig, PROFILES, "smoke", overrides={**common(seed, steps, lr), "loss": "rkl-sampled",
                                                                           "freeze_vision": False})
    else:
        from methods.reopold.config import PROFILES, REOPOLDConfig
        from methods.reopold.trainer import train

        cfg = load_method_config(REOPOLDConfig, PROFILES, "smoke", overrides={**common(seed, steps, lr),
                                                                               "t_switch": steps // 3})
    final = train(cfg, out)
    assert final is not None
    return out


def fixed_rkl(students: list[Any], teacher: Any) -> list[float]:
    """Exact per-token reverse KL of each student on one fixed set of rollouts of the first one."""
    from harness import losses
    from harness.data.registry import load_training_set
    from harness.rollout.hf import HFRolloutEngine
    from harness.scoring import response_hidden_states
    from harness.types import SamplingParams

    prompts = load_training_set(DATA, "validation", limit=16)
    traj = HFRolloutEngine(students[0], batch_size=16, progress=False).generate(
        prompts, SamplingParams(n=4, max_new_tokens=8, seed=123))
    th, tw = response_hidden_states(teacher, traj)
    out = []
    for s in students:
        sh, sw = response_hidden_states(s, traj)
        kl = losses.full_kl(losses.HiddenHead(sh, sw), losses.HiddenHead(th, tw), traj.response_mask, "reverse")
        out.append(float(kl.sum() / traj.response_mask.sum()))
    return out


def eval_acc(bundle: Any) -> float:
    from harness.data.registry import load_training_set
    from harness.reward_registry import make_reward_fn
    from harness.rollout.hf import HFRolloutEngine
    from harness.types import SamplingParams

    prompts = load_training_set(DATA, "validation", limit=32)
    traj = HFRolloutEngine(bundle, batch_size=16, progress=False).generate(
        prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=8))
    return float(make_reward_fn(REWARD)(traj).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import torch

    from harness.jsonl import read_jsonl
    from harness.models import load_model, load_teacher, resolve_model_name

    torch.set_num_threads(1)
    base = load_model(resolve_model_name(STUDENT))
    teacher = load_teacher(resolve_model_name(TEACHER), base, dtype="float32")
    rows: dict[str, list[tuple[float, ...]]] = {"rkl": [], "reopold": []}
    lines = [f"{time.strftime('%Y-%m-%d')}; student {STUDENT}, teacher {TEACHER}, data {DATA}; 8 prompts x 8 "
             f"rollouts x 8 tokens, 1 update/step, lr {args.lr:g}, {args.steps} steps (REOPOLD t_switch "
             f"{args.steps // 3}); RKL = methods.opd rkl-sampled", "",
             "| method | seed | reward (last 5 steps) | rkl before | rkl after | eval acc (greedy, 32) |",
             "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for method in ("rkl", "reopold"):
                run = train_one(method, seed, args.steps, args.lr, Path(tmp))
                recs = read_jsonl(run / "metrics.jsonl")
                reward = statistics.mean(r["reward_mean"] for r in recs[-5:])
                final = load_model(run / "final")
                before, after = fixed_rkl([base, final], teacher)
                acc = eval_acc(final)
                rows[method].append((reward, before, after, acc))
                lines.append(f"| {method} | {seed} | {reward:.3f} | {before:.3f} | {after:.3f} | {acc:.3f} |")
                print(lines[-1], flush=True)
    for method, vals in rows.items():
        cols = list(zip(*vals))
        fmt = [f"{statistics.mean(c):.3f} ± {statistics.stdev(c) if len(c) > 1 else 0.0:.3f}" for c in cols]
        lines.append(f"| {method} | mean ± sd | {fmt[0]} | {fmt[1]} | {fmt[2]} | {fmt[3]} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write(text + "\n\n")


if __name__ == "__main__":
    main()
