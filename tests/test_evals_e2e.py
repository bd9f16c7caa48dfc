"""End to end, offline: the tiny smoke VLM evaluated on fixture rows of every benchmark through
``evals run`` (the CLI), then a rerun that resumes from the records without generating."""
from __future__ import annotations

import json

from evals.benchmarks import REGISTRY
from evals.cli import main as cli_main
from evals.runner import read_records


def test_evals_run_every_benchmark_on_the_smoke_model(tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["run", "--model", "smoke:qwen2_5_vl", "--benchmarks", "all", "--source", "smoke",
            "--max-new-tokens", "4", "--batch-size", "8", "--out", str(out), "--no-progress"]
    assert cli_main(argv) == 0
    for name, bench in REGISTRY.items():
        summary = json.loads((out / name / "summary.json").read_text())
        records = read_records(out / name / "records.jsonl")
        assert summary["n"] == len(records) == len(bench.load("smoke")) > 0
        assert 0.0 <= summary["accuracy"] <= 100.0 and summary["model"] == "smoke:qwen2_5_vl"
        assert all(isinstance(r["response"], str) and r["time_s"] >= 0 for r in records)
    sizes = {p: p.stat().st_size for p in out.glob("*/records.jsonl")}
    assert cli_main(argv) == 0                       # resumes: nothing left to generate
    assert {p: p.stat().st_size for p in out.glob("*/records.jsonl")} == sizes
    assert "mathvista" in capsys.readouterr().out
