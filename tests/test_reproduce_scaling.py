"""Test-time scaling requests (recipe ``scaling:``; REOPOLD Figure 1(b) / Figure 13) and the Table 8
memory section: the planner adds one sampled evaluation per listed row (k capped by
``max_sample_k`` and labelled so), the report turns the records into Pass@k / Avg@k / Maj@k curves
(a PNG in the HTML, tables in the Markdown, values in the JSON); and the memory accounting."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from reproduce import run_table
from reproduce.plan import build_plan
from reproduce.recipes import load_recipe
from tests.test_reproduce import METHODS_FAKE, RECIPE, Fakes, write_toy

SCALING = {"benchmarks": ["bench_a"], "rows": ["sft_only", "ours"], "k": 8, "temperature": 0.6,
           "source": "Figure X"}
# per item i of a benchmark: draw j is correct when (i + j) % 3 == 0; its answer is "right" then
N_ITEMS = 3


class ScalingFakes(Fakes):
    def eval_fn(self, model, benchmarks, *, out_dir, limit, mode, k, **kw):
        if mode != "sample" or k == 1:
            return super().eval_fn(model, benchmarks, out_dir=out_dir, limit=limit, mode=mode, k=k, **kw)
        self.evaluated.append((model, list(benchmarks), mode, k))
        for b in benchmarks:
            d = Path(out_dir) / b
            d.mkdir(parents=True, exist_ok=True)
            recs = []
            for i in range(N_ITEMS):
                correct = [(i + j) % 3 == 0 for j in range(k)]
                recs.append({"id": f"{b}-{i}", "correct": correct, "score": sum(correct) / k,
                             "extracted": ["right" if c else f"wrong{j % 2}" for j, c in enumerate(correct)]})
            (d / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
            (d / "summary.json").write_text(json.dumps({"benchmark": b, "n": N_ITEMS, "accuracy": 33.3,
                                                        "ci95": [0, 100], "metrics": {}, "metric_ci95": {},
                                                        "mode": mode, "k": k}))
        return {}


@pytest.fixture
def toy_scaling(tmp_path):
    recipe = copy.deepcopy(RECIPE)
    recipe["evaluation"] = {"smoke": {"limit": 3, "source": "smoke", "max_sample_k": 4}}
    recipe["tables"][1]["scaling"] = SCALING
    rdir, pdir = write_toy(tmp_path, recipe)
    fakes = ScalingFakes()
    kw = dict(methods=METHODS_FAKE, train_fn=fakes.train_fn, eval_fn=fakes.eval_fn,
              smoke_path=lambda kind: f"/tiny/{kind}", recipe_dir=rdir, published_dir=pdir)
    return fakes, kw, tmp_path / "run"


def test_scaling_request_plans_capped_sampled_evals_and_reports_curves(toy_scaling):
    fakes, kw, out = toy_scaling
    res = run_table("toy", "table2", "smoke", out, **kw)
    sampled = [e for e in fakes.evaluated if e[2] == "sample" and e[3] == 4]
    # the two scaling rows' models (sft, rl) at k = 4 (capped from 8), besides the ours16 row's own k = 4
    assert any("/sft-" in m for m, *_ in sampled) and sum("/rl-" in m for m, *_ in sampled) == 2
    rep = res["report"]
    sc = rep["scaling"]
    assert sc["k"] == 4 and sc["k_requested"] == 8 and sc["capped"] and sc["label"] == "smoke: k \u2264 4, not 8"
    runs = [c for c in sc["curves"] if c["status"] == "run"]
    assert {c["key"] for c in runs} == {"sft_only", "ours"}
    c = runs[0]
    assert c["k"] == [1, 2, 3, 4] and c["n_items"] == N_ITEMS
    # items 0,1,2 with draws correct at j = 0,3 / 2 / 1: pass@1 = mean accuracy over 4 draws
    assert c["pass"][0] == pytest.approx(100 * (2 + 1 + 1) / 12)
    assert c["pass"][3] == pytest.approx(100.0)  # every item has a correct draw among 4
    assert c["avg"][0] == pytest.approx(100 / 3)  # first draws: item 0 only
    assert c["maj"][0] == pytest.approx(100 / 3)
    md = Path(res["paths"]["md"]).read_text()
    assert "## Test-time scaling (smoke: k \u2264 4, not 8)" in md and "Pass@k" in md and "Maj@k" in md
    html = Path(res["paths"]["html"]).read_text()
    assert html.count("data:image/png;base64,") == 3  # columns, learning curves, scaling
    data = json.loads(Path(res["paths"]["json"]).read_text())
    assert data["scaling"]["curves"][0]["benchmark"] == "bench_a"


def test_scaling_rows_that_did_not_run_are_reported(toy_scaling, monkeypatch):
    from reproduce.report import scaling_data, scaling_tables

    fakes, kw, out = toy_scaling
    plan = build_plan(load_recipe("toy", kw["recipe_dir"]), ["table2"], "smoke", methods=METHODS_FAKE)
    data = scaling_data(plan, out, plan.tables["table2"].scaling)
    assert {c["status"] for c in data["curves"]} == {"not run"}
    tables = scaling_tables({"scaling": data})
    assert tables and all(row[-1] == "not run" for _, _, body in tables for row in body)


def test_reopold_table2_requests_figure_1b_and_smoke_caps_it():
    paper = build_plan(load_recipe("reopold"), ["table2"], "paper").tables["table2"].scaling
    smoke_plan = build_plan(load_recipe("reopold"), ["table2"], "smoke")
    smoke = smoke_plan.tables["table2"].scaling
    assert paper["k"] == 32 and not paper["capped"] and paper["benchmarks"] == ["geometry3k", "mathverse"]
    assert [(r["group"], r["key"]) for r in paper["rows"]] == [
        ("teacher", "qwen2_5_vl_32b_noisyrollout"), ("qwen2_5_vl_3b", "rkl"), ("qwen2_5_vl_3b", "reopold")]
    assert smoke["k"] == 4 and smoke["capped"] and smoke["label"].startswith("smoke: k \u2264 4")
    evals = smoke_plan.evals_for("table2")
    assert {e.k for e in evals if e.mode == "sample"} == {4}


def test_paper_dry_run_prints_the_scaling_request(capsys):
    from reproduce.cli import main

    assert main(["table2", "--paper", "reopold", "--profile", "paper", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Test-time scaling" in out and "k = 1..32" in out and "sample, k=32, T=0.6" in out


def test_memory_accounting_matches_a_hand_computation():
    from methods.reopold.memory import GIB, accounting, report_section

    rows = {r.row: r for r in accounting()}
    chunk = (128 << 20) // (4 * 152_064)  # 220 tokens: harness.losses.CHUNK_BYTES (128 MiB) of fp32 logits
    assert chunk == 220
    block = (128 << 20) // (64 * 152_064)  # kernel blocks of 13 rows (1/16 of the budget)
    tokens = 128 * 12 * 2048 // 8  # 393,216 response tokens per GPU
    assert rows["gkd_naive"].working_bytes == 5 * 8192 * 152_064 * 4  # 23.2 GiB
    assert rows["gkd_naive"].stored_bytes == tokens * 152_064 * 2  # 111.4 GiB of bf16 logits
    assert rows["gkd_naive"].peak_bytes / GIB > 80  # more than one H100: the paper's OOM
    assert rows["gkd"].working_bytes == (2 * chunk + 5 * block) * 152_064 * 4 == 307_169_280
    assert rows["gkd"].stored_bytes == tokens * (5120 * 2 + 4)
    assert rows["reopold"].stored_bytes == tokens * 4 == 1_572_864  # 1.5 MiB
    assert rows["gkd_top5"].stored_bytes == rows["reopold_top5"].stored_bytes == tokens * (5 * 8 + 4)
    sec = report_section()
    assert len(sec["rows"]) == 5 and "80 GiB" in sec["note"]


def test_table8_report_renders_the_memory_section():
    plan = build_plan(load_recipe("reopold"), ["table8"], "smoke")
    assert plan.tables["table8"].memory == "reopold"
    from reproduce.report import memory_section, to_markdown

    mem = memory_section("reopold")
    rep = {"paper": "reopold", "table": "table8", "profile": "smoke", "smoke": False, "caption": "c",
           "generated": "now", "run_dir": "x", "git_rev": "r", "eval_settings": {}, "tolerance": 1.0,
           "counts": {}, "columns": [], "rows": [], "cells": [], "stages": [], "memory": mem}
    md = to_markdown(rep)
    assert "Memory per GPU at the paper's sizes" in md and "GKD†" in md and "Reopold†" in md
