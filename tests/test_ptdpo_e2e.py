"""The smoke runs of PTD-PO's tables: Table 4 (GRPO / DAPO / GSPO with and without PTD) end to end
with a resume in the slow suite (~2 min on 2 cores); Tables 1, 2 and 5 under the ``full`` marker."""
from __future__ import annotations

import json

import pytest

NOT_RUNNABLE = {"hdpo", "papo"}


def _run(table: str, out):
    from reproduce import run_table
    from reproduce.published import load_published

    res = run_table("ptdpo", table, "smoke", out)
    rep = res["report"]
    assert rep["smoke"] and all("SMOKE PROFILE" in p.read_text() for p in res["paths"].values())
    published = load_published("ptdpo").table(table)
    assert len(rep["cells"]) == len(published.rows) * len(published.columns)  # nothing dropped
    # a relative gain over a smoke baseline of 0 is undefined, and says so; anything else not run is a row
    not_run = {c["row"]: c["reason"] for c in rep["cells"]
               if c["status"] == "not run" and "= 0 is undefined" not in c["reason"]}
    assert set(not_run) == (NOT_RUNNABLE if table == "table1" else set())
    assert all("not implemented (" in reason for reason in not_run.values())  # derived cells quote it
    measured = [c for c in rep["cells"] if c["row"] not in NOT_RUNNABLE and c["measured"] is not None]
    assert measured  # every harness-trained row has measurements
    return rep


@pytest.mark.slow
def test_ptdpo_table4_smoke_end_to_end_and_resume(tmp_path):
    out = tmp_path / "run"
    rep = _run("table4", out)
    state = json.loads((out / "state.json").read_text())
    assert len(state["stages"]) == 6 and all(s["status"] == "done" for s in state["stages"].values())
    metrics = {}
    for d in (out / "stages").iterdir():
        last = json.loads((d / "metrics.jsonl").read_text().splitlines()[-1])
        metrics[d.name.rsplit("-", 1)[0]] = last
    assert all("ptd" in m for k, m in metrics.items() if k.startswith("ptdpo"))  # the PTD term acted
    assert all("ptd" not in m for k, m in metrics.items() if not k.startswith("ptdpo"))  # lambda 0: never evaluated
    assert "dapo_gen_rounds" in metrics["dapo_4b_abl"] and "dapo_gen_rounds" in metrics["ptdpo_dapo_4b_abl"]
    mtimes = {p: p.stat().st_mtime for p in (out / "stages").rglob("COMPLETE")}
    again = _run("table4", out)  # resume: nothing retrained or re-evaluated
    assert [c["measured"] for c in again["cells"]] == [c["measured"] for c in rep["cells"]]
    assert {p: p.stat().st_mtime for p in (out / "stages").rglob("COMPLETE")} == mtimes


@pytest.mark.full
@pytest.mark.parametrize("table", ["table1", "table2", "table5"])
def test_ptdpo_other_tables_smoke_end_to_end(table, tmp_path):
    _run(table, tmp_path / "run")
