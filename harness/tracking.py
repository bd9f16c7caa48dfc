"""Experiment tracking through the trackers' own libraries: ``report_to = none | tensorboard |
wandb | mlflow`` (several: comma-separated). ``metrics.jsonl`` in the run directory stays the
source of truth; a tracker gets the same step records as they are written, on the main rank.

* ``tensorboard``: ``torch.utils.tensorboard.SummaryWriter`` into ``<run>/tensorboard``; on a resume
  from step s, events after s are purged (``purge_step``), as ``metrics.jsonl`` is truncated.
* ``wandb``: ``wandb.init`` in ``<run>``, mode from ``WANDB_MODE`` (default ``offline``: nothing
  leaves the machine until ``wandb sync``; set ``WANDB_MODE=online`` to stream), project from
  ``WANDB_PROJECT`` (default ``vlmrepro``); the run id is kept in ``<run>/tracking.json`` so a
  resumed run continues the same wandb run (``resume="allow"``).
* ``mlflow``: tracking URI from ``MLFLOW_TRACKING_URI`` (default ``<run>/mlruns``, a local file
  store, with ``MLFLOW_ALLOW_FILE_STORE`` set as MLflow 3 requires for it), experiment from ``MLFLOW_EXPERIMENT_NAME`` (default ``vlmrepro``); the run id is kept in
  ``<run>/tracking.json`` and resumed. MLflow cannot delete metric history: steps re-run after a
  crash are logged a second time (the last value per step is the current one).

Numbers only: non-numeric fields of a record are not sent. A missing library is a one-line
:class:`~harness.errors.ConfigError` naming the package to install (extra ``tracking``).
"""
from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness.errors import ConfigError

__all__ = ["TRACKERS", "Tracker", "parse_report_to", "open_trackers"]

TRACKERS = ("tensorboard", "wandb", "mlflow")
_STATE = "tracking.json"


def parse_report_to(value: str | Sequence[str] | None) -> list[str]:
    """``"none"`` / ``""`` / None -> []; ``"tensorboard,wandb"`` -> both; unknown names -> ConfigError."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    names = [v.strip().lower() for v in items if v and v.strip() and v.strip().lower() != "none"]
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ConfigError(f"report_to: unknown tracker(s) {unknown}; known: none, {', '.join(TRACKERS)}")
    return list(dict.fromkeys(names))


def _numbers(record: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in record.items() if k != "step" and isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(float(v))}


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
    return out


def _need(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"report_to={package} needs the {package} package: pip install {package} "
                          f"(or the project's 'tracking' extra) ({e})") from e


class _State:
    """Run ids the trackers keep between sessions of one run (``<run>/tracking.json``)."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / _STATE
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def save(self) -> None:
        from harness.durable import atomic_write_text
        atomic_write_text(self.path, json.dumps(self.data, indent=1))


class Tracker:
    """Sends step records to one tracker. ``log`` after each step, ``close`` at the end."""

    def log(self, record: Mapping[str, Any], step: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class TensorBoard(Tracker):
    def __init__(self, run_dir: Path, config: Mapping[str, Any], start_step: int, state: _State):
        _need("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_step + 1)
        if start_step == 0:
            self.writer.add_text("config", "```\n" + json.dumps(dict(config), indent=1, default=str) + "\n```")

    def log(self, record, step):
        for k, v in _numbers(record).items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def close(self):
        self.writer.close()


class WandB(Tracker):
    def __init__(self, run_dir: Path, config: Mapping[str, Any], start_step: int, state: _State):
        wandb = _need("wandb", "wandb")
        run_id = state.data.get("wandb") or uuid.uuid4().hex[:12]
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "vlmrepro"), id=run_id, resume="allow",
                              dir=str(run_dir), name=run_dir.name, config=_flat(config),
                              mode=os.environ.get("WANDB_MODE", "offline"))
        state.data["wandb"] = run_id
        state.save()

    def log(self, record, step):
        self.run.log(_numbers(record), step=step)

    def close(self):
        self.run.finish()


class MLflow(Tracker):
    def __init__(self, run_dir: Path, config: Mapping[str, Any], start_step: int, state: _State):
        mlflow = _need("mlflow", "mlflow")
        self.mlflow = mlflow
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if uri is None:  # the default: a file store in the run directory (MLflow 3 asks for an opt-in)
            uri = (run_dir / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "vlmrepro"))
        run_id = state.data.get("mlflow")
        self.run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_dir.name)
        if run_id is None:
            params = _flat(config)
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params a call
                mlflow.log_params(dict(list(params.items())[i:i + 100]))
            state.data["mlflow"] = self.run.info.run_id
            state.save()

    def log(self, record, step):
        self.mlflow.log_metrics(_numbers(record), step=step)

    def close(self):
        self.mlflow.end_run()


_CLASSES = {"tensorboard": TensorBoard, "wandb": WandB, "mlflow": MLflow}


class _Many(Tracker):
    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def log(self, record, step):
        for t in self.trackers:
            t.log(record, step)

    def close(self):
        for t in self.trackers:
            t.close()


def open_trackers(report_to: str | Sequence[str] | None, run_dir: str | Path, config: Mapping[str, Any],
                  start_step: int = 0) -> Tracker:
    """The trackers ``report_to`` names, opened for ``run_dir`` resuming after ``start_step``
    (none: a tracker that does nothing)."""
    names = parse_report_to(report_to)
    state = _State(Path(run_dir))
    return _Many([_CLASSES[n](Path(run_dir), config, start_step, state) for n in names])
