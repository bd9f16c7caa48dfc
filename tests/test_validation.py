"""Validation injected by the caller: harness.validation.with_validation (when val_acc is logged),
load_validator (the vlmrepro.validators entry points), evals.validation.benchmark_validator, and
the composition roots that inject it (reproduce, the VOLD CLI)."""
from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import pytest

from harness.validation import VALIDATORS_GROUP, load_validator, with_validation

ROOT = Path(__file__).resolve().parents[1]


def _run(build, steps):
    step = build(ctx="CTX")
    return [step(i, []) for i in range(steps)]


def test_val_acc_every_n_steps_at_the_last_and_before_the_first_update():
    log = []
    scores = iter(range(100))

    def build_step(ctx):
        return lambda i, samples: log.append(f"update{i}") or {"step": i + 1}

    def make_validator(ctx):
        assert ctx == "CTX"
        log.append("built")

        def validate():
            log.append("val")
            return float(next(scores))
        return validate

    recs = _run(with_validation(build_step, make_validator, every=2, steps=5), 5)
    assert recs == [{"step": 1, "val_acc_step0": 0.0}, {"step": 2, "val_acc": 1.0}, {"step": 3},
                    {"step": 4, "val_acc": 2.0}, {"step": 5, "val_acc": 3.0}]
    assert log[:4] == ["built", "val", "update0", "update1"]  # step 0 validates before its update
    assert with_validation(build_step, make_validator, every=0, steps=5) is build_step


def _fake_dist(tmp_path, entries: str) -> Path:
    d = tmp_path / "site" / "vlmrepro_validators_test-0.dist-info"
    d.mkdir(parents=True)
    (d / "METADATA").write_text("Metadata-Version: 2.1\nName: vlmrepro-validators-test\nVersion: 0\n")
    (d / "entry_points.txt").write_text(f"[{VALIDATORS_GROUP}]\n{entries}\n")
    return d.parent


def test_load_validator_resolves_the_entry_point_and_names_what_is_missing(tmp_path, monkeypatch):
    from evals.validation import benchmark_validator

    monkeypatch.syspath_prepend(str(_fake_dist(tmp_path, "benchmark = evals.validation:benchmark_validator")))
    assert load_validator("benchmark") is benchmark_validator
    with pytest.raises(LookupError, match="no validator 'nope'.*registered: benchmark"):
        load_validator("nope")


def test_pyproject_declares_the_benchmark_validator():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    target = meta["project"]["entry-points"][VALIDATORS_GROUP]["benchmark"]
    module, attr = target.split(":")
    from importlib import import_module

    assert getattr(import_module(module), attr).__name__ == "benchmark_validator"


def test_benchmark_validator_checks_the_benchmark_name_up_front():
    from types import SimpleNamespace

    from evals.validation import benchmark_validator

    assert callable(benchmark_validator(SimpleNamespace(val_benchmark="geometry3k_val")))
    with pytest.raises(Exception, match="no_such_bench"):
        benchmark_validator(SimpleNamespace(val_benchmark="no_such_bench"))


def test_reproduce_injects_the_benchmark_validator_into_validating_methods():
    import functools

    from evals.validation import benchmark_validator
    from methods.registry import METHODS
    from reproduce.runner import _default_train

    vold = _default_train("vold")
    assert isinstance(vold, functools.partial) and vold.keywords == {"validator": benchmark_validator}
    assert [n for n, s in METHODS.items() if s.validates] == ["vold"]
    assert _default_train("grpo") is METHODS["grpo"].train


def test_vold_cli_validates_through_the_entry_point(tmp_path, monkeypatch, capsys):
    from methods.vold.__main__ import main

    monkeypatch.syspath_prepend(str(_fake_dist(tmp_path, "benchmark = evals.validation:benchmark_validator")))
    out = tmp_path / "rl"
    assert main(["--profile", "smoke", "--stage", "rl", "--out", str(out), "steps=2", "val_every=1",
                 "val_smoke_n=2", "val_max_new_tokens=4", "prompts_per_step=2", "save_every=2"]) == 0
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "val_acc_step0" in recs[0] and all("val_acc" in r for r in recs)
