"""Validation during RL on Geo3K, visual (VOLD §4.1, Fig. 3), and the Figure-3 style plot.

The student answers the validation set *with its images* (greedy, the benchmark's own prompt and
scoring from evals.benchmarks) every ``val_every`` steps and before the first update; the accuracy
(percent) goes into the step's metrics record as ``val_acc`` (and ``val_acc_step0`` in the first
record). Under data parallelism each rank answers its share and the counts are summed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from harness.trainer import Context, StepFn
from harness.types import SamplingParams
from harness.update import reduce_floats


class Validator:
    """Greedy accuracy of the current policy on ``cfg.val_benchmark``."""

    def __init__(self, cfg: Any, ctx: Context):
        from evals.benchmarks import get_benchmark
        from harness.rollout.hf import HFRolloutEngine

        self.cfg, self.ctx = cfg, ctx
        self.bench = get_benchmark(cfg.val_benchmark)
        samples = self.bench.load(cfg.val_source, cfg.val_limit, smoke_n=cfg.val_smoke_n)
        rank, world = ctx.strategy.rank, ctx.strategy.world_size
        self.samples = samples[rank::world]
        self.total = len(samples)
        self.engine = HFRolloutEngine(ctx.policy, batch_size=cfg.val_batch_size, progress=False)

    def __call__(self) -> float:
        model = self.ctx.policy.model
        was_training = model.training
        model.eval()
        correct = 0.0
        if self.samples:
            traj = self.engine.generate(self.samples, SamplingParams(n=1, temperature=0.0,
                                                                     max_new_tokens=self.cfg.val_max_new_tokens))
            correct = sum(self.bench.score(s, text)["score"] for s, text in zip(self.samples, traj.texts))
        if was_training:
            model.train()
        hits = reduce_floats(self.ctx.strategy, [float(correct)], "sum")[0]
        return 100.0 * hits / max(self.total, 1)


def with_validation(build_step: Callable[[Context], StepFn], cfg: Any) -> Callable[[Context], StepFn]:
    """Wrap an online step builder so that steps log ``val_acc`` every ``cfg.val_every`` steps
    (and at the last), and the first step also ``val_acc_step0`` (before its update)."""
    if cfg.val_every <= 0:
        return build_step

    def build(ctx: Context) -> StepFn:
        step = build_step(ctx)
        validate = Validator(cfg, ctx)

        def wrapped(i: int, samples: list) -> dict[str, float]:
            before = {"val_acc_step0": validate()} if i == 0 else {}
            metrics = step(i, samples)
            if (i + 1) % cfg.val_every == 0 or i + 1 == cfg.steps:
                metrics["val_acc"] = validate()
            metrics.update(before)
            return metrics

        return wrapped

    return build


def curves(metrics: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) series of a run's metrics: ``val_acc`` (with step 0) and ``reward_mean``."""
    val, reward = [], []
    for rec in metrics:
        if "val_acc_step0" in rec:
            val.append((0, float(rec["val_acc_step0"])))
        if "val_acc" in rec:
            val.append((int(rec["step"]), float(rec["val_acc"])))
        if "reward_mean" in rec:
            reward.append((int(rec["step"]), float(rec["reward_mean"])))
    return {"val_acc": val, "reward_mean": reward}


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    out = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def plot_learning_curves(runs: dict[str, str | Path | list[dict]], out: str | Path,
                         title: str = "Learning dynamics (VOLD Fig. 3 layout)") -> Path:
    """Two panels like VOLD Figure 3: validation accuracy on Geo3K (left) and the training reward
    (right) against the RL step, one line per run (a run directory or its metrics records)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, run in runs.items():
        c = curves(run if isinstance(run, list) else read_metrics(run))
        for ax, key in ((left, "val_acc"), (right, "reward_mean")):
            if c[key]:
                xs, ys = zip(*c[key])
                ax.plot(xs, ys, marker="o" if key == "val_acc" else None, label=label)
    left.set(xlabel="RL step", ylabel="Geo3K validation accuracy (%)", title="Visual validation (Geo3K)")
    right.set(xlabel="RL step", ylabel="mean reward", title="Training reward (text-only)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
