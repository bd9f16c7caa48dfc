"""VOLD's learning curves (Fig. 3): validation accuracy on Geo3K and the training reward against
the RL step, from a run's ``metrics.jsonl``. The validation itself is injected by the caller
(``harness.validation``, ``evals.validation.benchmark_validator``): methods do not import evals.
"""
from __future__ import annotations

from pathlib import Path

from harness.run_dir import RunDir

__all__ = ["curves", "plot_learning_curves", "read_metrics"]


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
    """The step records of a run directory (harness.run_dir; a torn last line is left out)."""
    return RunDir(run_dir).read_metrics()


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
