"""Experiment tracking (harness.tracking): the trackers get exactly the records of metrics.jsonl,
a resumed run continues the same tracker run without duplicates, bad names are one-line errors."""
from __future__ import annotations

import json

import pytest

from harness.errors import ConfigError
from harness.tracking import parse_report_to

RUN = dict(steps=4, save_every=2, batch_size=2, micro_batch_size=2, data_limit=8, max_length=32)


def _sft(tmp_path, report_to, stop_after=None):
    from methods.registry import load_method_config
    from methods.sft.config import PROFILES, SFTConfig
    from methods.sft.trainer import train

    cfg = load_method_config(SFTConfig, PROFILES, "smoke", overrides=RUN | {"report_to": report_to})
    return train(cfg, tmp_path / "run", stop_after=stop_after)


def _metrics(tmp_path):
    return [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]


def _tensorboard(tmp_path) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    events = acc.Scalars("loss")
    assert len({e.step for e in events}) == len(events), "a step logged twice"
    return {e.step: e.value for e in events}


def test_report_to_names():
    assert parse_report_to("none") == [] and parse_report_to(None) == [] and parse_report_to("") == []
    assert parse_report_to("TensorBoard, wandb,tensorboard") == ["tensorboard", "wandb"]
    with pytest.raises(ConfigError, match="unknown tracker.*neptune"):
        parse_report_to("tensorboard,neptune")
    from methods.registry import load_method_config
    from methods.sft.config import PROFILES, SFTConfig
    with pytest.raises(ConfigError, match="report_to"):
        load_method_config(SFTConfig, PROFILES, "smoke", overrides={"report_to": "neptune"})


def test_trackers_get_the_metrics_and_a_resume_continues_the_same_runs(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="the tracking extra is not installed")
    mlflow = pytest.importorskip("mlflow", reason="the tracking extra is not installed")
    pytest.importorskip("wandb", reason="the tracking extra is not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert _sft(tmp_path, "tensorboard,wandb,mlflow", stop_after=2) is None   # a session ends at step 2
    ids = json.loads((tmp_path / "run" / "tracking.json").read_text())
    assert _sft(tmp_path, "tensorboard,wandb,mlflow") is not None             # resumed to the end
    assert json.loads((tmp_path / "run" / "tracking.json").read_text()) == ids  # same wandb / mlflow runs
    loss = {r["step"]: r["loss"] for r in _metrics(tmp_path)}
    assert sorted(loss) == [1, 2, 3, 4]
    tb = _tensorboard(tmp_path)
    assert sorted(tb) == [1, 2, 3, 4] and all(abs(tb[s] - loss[s]) < 1e-6 for s in loss)
    client = mlflow.tracking.MlflowClient(tracking_uri=(tmp_path / "run" / "mlruns").resolve().as_uri())
    hist = {m.step: m.value for m in client.get_metric_history(ids["mlflow"], "loss")}
    assert sorted(hist) == [1, 2, 3, 4] and all(abs(hist[s] - loss[s]) < 1e-9 for s in loss)
    assert list((tmp_path / "run" / "wandb").glob(f"offline-run-*-{ids['wandb']}"))


def test_tracking_is_not_part_of_the_run_identity(tmp_path):
    """A run may be resumed with other trackers (report_to does not change what it computes)."""
    pytest.importorskip("tensorboard", reason="the tracking extra is not installed")
    assert _sft(tmp_path, "none", stop_after=2) is None
    assert _sft(tmp_path, "tensorboard") is not None
    assert sorted(_tensorboard(tmp_path)) == [3, 4]


def test_a_missing_tracker_library_is_a_one_line_error(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)   # import wandb -> ImportError
    with pytest.raises(ConfigError, match="pip install wandb"):
        _sft(tmp_path, "wandb")
