"""VGS tables 1, 2 and 5 through reproduce: plans in both profiles (default suite), the smoke run
of Table 1 with a resume (``slow``, ~3 min on 2 cores), and the smoke runs of Tables 2 and 5
(``full``: CI skips them)."""
from __future__ import annotations

import json

import pytest

from reproduce.plan import RUNNABLE, build_plan
from reproduce.published import load_published
from reproduce.recipes import load_recipe

TABLES = ("table1", "table2", "table5")


@pytest.mark.parametrize("profile", ["smoke", "paper"])
def test_vgs_plans_every_row_runnable_with_the_teacher_stage_first(profile):
    recipe = load_recipe("vgs")
    plan = build_plan(recipe, list(TABLES), profile)
    published = load_published("vgs")
    for tid in TABLES:
        rows = plan.tables[tid].rows
        assert [(r.group, r.key) for r in rows] == [(r.group, r.key) for r in published.table(tid).rows]
        assert all(r.status in (RUNNABLE, "derived") for r in rows), tid
        for r in rows:
            if r.model and r.model.startswith(("opd_", "vgs_", "adaptive_", "grpo_opd", "grpo_vgs")):
                chain = plan.models[r.model].stages
                assert chain[0].split("/")[1].startswith("teacher_grpo-"), (tid, r.key, chain)
    assert all(s.implemented for s in plan.stages.values())
    teacher = next(s for s in plan.stages.values() if s.id == "teacher_grpo")
    assert teacher.method == "vgs_teacher"
    ks = {e.k for e in plan.evals.values() if e.mode == "sample"}
    assert ks == ({2} if profile == "smoke" else {16})
    if profile == "smoke":  # the two students are one tiny model: standard OPD is trained once
        opd = next(s for s in plan.stages.values() if s.id == "opd_2b")
        assert opd.aliases == ["opd_4b"]
        labels = [r.label for r in plan.tables["table1"].rows if r.key.endswith("_acc16") and not r.derived]
        assert labels and all("not Acc@16" in x for x in labels)
    else:
        assert all("not Acc@16" not in r.label for r in plan.tables["table1"].rows)


def _run(table: str, out):
    from reproduce import run_table

    res = run_table("vgs", table, "smoke", out)
    rep = res["report"]
    assert rep["smoke"] and all("SMOKE PROFILE" in p.read_text() for p in res["paths"].values())
    published = load_published("vgs").table(table)
    assert len(rep["cells"]) == len(published.rows) * len(published.columns)  # nothing dropped
    assert not [c for c in rep["cells"] if c["status"] == "not run"]  # every row measured or derived
    return rep


@pytest.mark.slow
def test_vgs_table1_smoke_end_to_end_and_resume(tmp_path):
    out = tmp_path / "run"
    rep = _run("table1", out)
    cells = {(c["row"], c.get("group", ""), c["column"]): c for c in rep["cells"]}
    for group in ("qwen3_vl_2b", "qwen3_vl_4b"):  # improvement rows are computed from the measured rows
        for col in ("mmmu_pro_4", "avg"):
            imp, vgs, opd = (next(c for k, c in cells.items() if k[0] == row and group in json.dumps(c) and k[2] == col)
                             for row in ("improvement_acc1", "vgs", "standard_opd"))
            assert imp["measured"] == pytest.approx(vgs["measured"] - opd["measured"], abs=1e-6)
    state = json.loads((out / "state.json").read_text())
    assert state["stages"] and all(s["status"] == "done" for s in state["stages"].values())
    metrics = [json.loads(x) for p in (out / "stages").glob("vgs_2b-*/metrics.jsonl") for x in p.read_text().splitlines()]
    assert any("cos_std_vis" in m for m in metrics)  # the angle diagnostics were logged
    mtimes = {p: p.stat().st_mtime for p in (out / "stages").rglob("COMPLETE")}
    again = _run("table1", out)  # resume: nothing retrained or re-evaluated
    assert [c["measured"] for c in again["cells"]] == [c["measured"] for c in rep["cells"]]
    assert {p: p.stat().st_mtime for p in (out / "stages").rglob("COMPLETE")} == mtimes


@pytest.mark.full
@pytest.mark.parametrize("table", ["table2", "table5"])
def test_vgs_tables_2_and_5_smoke_end_to_end(table, tmp_path):
    _run(table, tmp_path / "run")
