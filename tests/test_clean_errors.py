"""Regression tests of issue 17 (clean errors): atomic evaluation metadata whose errors name the
file, non-finite numbers refused at validation, and every CLI answering a user mistake with one
line (naming the file / row / field / id) and exit code 2 while bugs keep their tracebacks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import evals
from evals.cli import main as evals_main
from evals.runner import EvalConfigError, read_records
from harness.cli_errors import run_reporting_errors, user_error_message
from harness.config import ConfigError, parse_overrides
from harness.data.registry import load_training_set
from harness.errors import DataError
from methods.grpo.config import PROFILES as GRPO_PROFILES, GRPOConfig
from methods.registry import cli_main, load_method_config
from reproduce.cli import main as reproduce_main
from tests.test_evals_support import FakeEngine

REPO = Path(__file__).resolve().parents[1]


def one_line_error(capsys, rc: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "\n" not in err and "Traceback" not in err, err
    assert "error: " in err
    for needle in needles:
        assert needle in err, err
    return err


# ------------------------------------------------------------------ evaluation metadata
def test_eval_metadata_is_written_atomically(tmp_path, monkeypatch):
    written = []
    import harness.durable as durable
    real = durable.atomic_write_text
    monkeypatch.setattr("evals.runner.atomic_write_text", lambda p, t: (written.append(Path(p).name), real(p, t)))
    evals.run("fake", "mmstar", out_dir=tmp_path, engine=FakeEngine(), source="smoke", smoke_n=2, progress=False)
    assert written == ["config.json", "summary.json"]


def test_torn_eval_config_names_the_file_or_is_rewritten_when_nothing_depends_on_it(tmp_path):
    run = dict(out_dir=tmp_path, source="smoke", smoke_n=3, progress=False)
    evals.run("fake", "mmstar", engine=FakeEngine(), **run)
    cfg = tmp_path / "mmstar" / "config.json"
    cfg.write_text(cfg.read_text()[:20])  # torn by a crash of an older version
    with pytest.raises(EvalConfigError) as err:
        evals.run("fake", "mmstar", engine=FakeEngine(), **run)
    assert str(cfg) in str(err.value) and "\n" not in str(err.value)
    # no records yet: the torn file stands for nothing and the rerun goes on
    (tmp_path / "mmstar" / "records.jsonl").unlink()
    evals.run("fake", "mmstar", engine=FakeEngine(), **run)
    assert json.loads(cfg.read_text())["model"] == "fake"
    assert len(read_records(tmp_path / "mmstar" / "records.jsonl")) == 3


def test_torn_summary_is_a_reason_naming_the_file(tmp_path):
    from reproduce.diff import measure
    d = tmp_path / "mmstar"
    d.mkdir()
    (d / "summary.json").write_text('{"n": 3, "acc')
    m = measure(d)
    assert m.value is None and str(d / "summary.json") in m.reason


# ------------------------------------------------------------------ non-finite numbers
@pytest.mark.parametrize("raw", ["lr=.nan", "lr=nan", "lr=.inf", "max_grad_norm=-.inf", "lr=1e999"])
def test_non_finite_floats_are_refused_at_validation(raw):
    with pytest.raises(ConfigError, match=rf"{raw.split('=')[0]}: expected a finite float"):
        load_method_config(GRPOConfig, GRPO_PROFILES, "smoke", overrides=parse_overrides([raw]))


def test_nan_lr_leaves_no_run_directory_and_the_fixed_rerun_works(tmp_path, capsys):
    from methods.grpo.trainer import train
    out = tmp_path / "run"
    rc = cli_main("grpo", GRPOConfig, GRPO_PROFILES, train, ["--out", str(out), "lr=.nan"])
    one_line_error(capsys, rc, "lr", "finite")
    assert not out.exists()
    assert cli_main("grpo", GRPOConfig, GRPO_PROFILES, train, ["--out", str(out), "steps=1"]) == 0


# ------------------------------------------------------------------ CLIs
def test_missing_dataset_path_is_a_data_error(tmp_path, capsys):
    with pytest.raises(DataError, match="/nonexistent/train.jsonl"):
        load_training_set("/nonexistent/train.jsonl")
    from methods.grpo.trainer import train
    rc = cli_main("grpo", GRPOConfig, GRPO_PROFILES, train,
                  ["--out", str(tmp_path / "run"), "data=/nonexistent/train.jsonl"])
    one_line_error(capsys, rc, "/nonexistent/train.jsonl")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv,needle", [
    (["table1", "--paper", "nosuch", "--dry-run"], "'nosuch'"),
    (["table99", "--paper", "vold", "--dry-run"], "'table99'"),
    (["table1", "--paper", "vold", "--rows", "nosuchrow", "--dry-run"], "nosuchrow"),
    (["check", "{missing}", "--baseline", "{missing}", "--tolerance", "1"], "missing.json"),
])
def test_reproduce_user_mistakes_are_one_line(tmp_path, capsys, argv, needle):
    argv = [a.replace("{missing}", str(tmp_path / "missing.json")) for a in argv]
    one_line_error(capsys, reproduce_main(argv), needle)


def test_out_pointing_at_a_file_is_one_line_in_every_cli(tmp_path, capsys):
    from methods.grpo.trainer import train
    f = tmp_path / "afile"
    f.write_text("x")
    one_line_error(capsys, reproduce_main(["table1", "--paper", "vold", "--out", str(f)]), str(f))
    one_line_error(capsys, evals_main(["run", "--model", "fake", "--benchmarks", "mmstar", "--source", "smoke",
                                       "--out", str(f)]), str(f))
    one_line_error(capsys, cli_main("grpo", GRPOConfig, GRPO_PROFILES, train, ["--out", str(f)]), str(f))
    one_line_error(capsys, cli_main("grpo", GRPOConfig, GRPO_PROFILES, train, ["--out", str(f / "sub")]), str(f))


def test_unreachable_hub_is_one_line(tmp_path):
    """A paper-profile table needs the hub: offline, the pre-flight lists each missing source on a
    line of its own and starts nothing; past it (``--skip-preflight``) the first hub access fails
    in one line."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "reproduce.cli", "table1", "--paper", "vold", "--profile", "paper",
           "--out", str(tmp_path / "rp"), "--fail-fast"]
    pre = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert pre.returncode == 2 and "Traceback" not in pre.stderr, pre.stderr[-2000:]
    assert "pre-flight: model Qwen/Qwen2.5-VL-3B-Instruct" in pre.stderr and not (tmp_path / "rp").exists()
    proc = subprocess.run(cmd + ["--skip-preflight"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and lines == [lines[-1]] and "cannot reach" in lines[-1]


@pytest.mark.parametrize("exc", [
    ConnectionError("Couldn't reach 'AI4Math/MathVista' on the Hub (OfflineModeIsEnabled)"),
    OSError("We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them"),
])
def test_hub_errors_are_recognised(exc):
    assert user_error_message(exc).startswith("cannot reach the model / dataset hub")


@pytest.mark.parametrize("exc", [RuntimeError("a bug"), ZeroDivisionError(), KeyError("internal"), OSError("odd")])
def test_bugs_keep_their_traceback(exc):
    def boom() -> int:
        raise exc

    assert user_error_message(exc) is None
    with pytest.raises(type(exc)):
        run_reporting_errors("x", boom)
