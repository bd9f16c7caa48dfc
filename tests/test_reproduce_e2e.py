"""The real smoke runs of VOLD Tables 1-3: tiny models trained and evaluated offline, every
harness-trained row measured, stages shared across tables, and a rerun that recomputes nothing
(slow: ~4-5 min on 2 cores)."""
from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_vold_tables_1_to_3_smoke_end_to_end_and_resume(tmp_path):
    from reproduce import run_table
    from reproduce.published import load_published

    out = tmp_path / "run"
    published = load_published("vold")
    reports = {}
    for table in ("table1", "table2", "table3"):
        res = run_table("vold", table, "smoke", out)
        rep = reports[table] = res["report"]
        assert rep["smoke"] and all("SMOKE PROFILE" in p.read_text() for p in res["paths"].values())
        n_rows, n_cols = len(published.table(table).rows), len(published.table(table).columns)
        assert len(rep["cells"]) == n_rows * n_cols  # nothing dropped
        not_run = {c["row"]: c["reason"] for c in rep["cells"] if c["status"] == "not run"}
        # Only the other groups' published checkpoints are not run in smoke; every row the
        # harness trains (and the base model) is measured.
        assert set(not_run) == ({"vlm_r1_3b_math", "vlaa_thinker_3b"} if table == "table1" else set())
        assert all(reason.startswith("needs ") and "(paper profile)" in reason for reason in not_run.values())
    state = json.loads((out / "state.json").read_text())
    assert state["stages"] and all(s["status"] == "done" for s in state["stages"].values())
    # One SFT-on-teacher-traces checkpoint serves every row that starts from it.
    assert sum(1 for k in state["stages"] if k.split("/")[-1].startswith("sft_teacher_mot-")) == 1
    stage_dirs = sorted(p.name for p in (out / "stages").iterdir())
    mtimes = {p: p.stat().st_mtime for p in (out / "stages").rglob("COMPLETE")}
    again = run_table("vold", "table1", "smoke", out)  # resume: nothing retrained or re-evaluated
    assert [c["measured"] for c in again["report"]["cells"]] == [c["measured"] for c in reports["table1"]["cells"]]
    assert sorted(p.name for p in (out / "stages").iterdir()) == stage_dirs
    assert {p: p.stat().st_mtime for p in (out / "stages").rglob("COMPLETE")} == mtimes
