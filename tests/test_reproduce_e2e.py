"""The real smoke run of VOLD Table 1: tiny models trained and evaluated offline (slow, ~5 min on 2 cores)."""
from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_vold_table1_smoke_end_to_end_and_resume(tmp_path):
    from reproduce import run_table

    res = run_table("vold", "table1", "smoke", tmp_path / "run")
    rep = res["report"]
    assert rep["smoke"] and all("SMOKE PROFILE" in p.read_text() for p in res["paths"].values())
    rows = {c["row"] for c in rep["cells"] if c["measured"] is not None}
    assert rows == {"qwen2_5_vl_3b", "xreasoner_3b_repl"}
    reasons = {c["row"]: c["reason"] for c in rep["cells"] if c["status"] == "not run"}
    assert reasons["vold"] == "not implemented (vold)"
    assert reasons["vlm_r1_3b_math"].startswith("needs omlab/")
    assert len(rep["cells"]) == 5 * 8
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert all(s["status"] == "done" for s in state["stages"].values())
    again = run_table("vold", "table1", "smoke", tmp_path / "run")          # resume: nothing recomputed
    assert [c["measured"] for c in again["report"]["cells"]] == [c["measured"] for c in rep["cells"]]
