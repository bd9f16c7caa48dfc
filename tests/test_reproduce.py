"""reproduce: recipes vs published tables, planning and sharing, diff statuses, bootstrap, resume,
reports, and the regression check's exit codes. Training and evaluation are faked here (fast);
the real end-to-end smoke run is the slow test in test_reproduce_e2e.py."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reproduce import run_table
from reproduce.cli import main
from reproduce.diff import (ABOVE, AGREES, BELOW, MISSING, NOT_RUN, Measurement, bootstrap_derived,
                            bootstrap_mean, cell_status, check_regressions, diff_table, per_sample_values)
from reproduce.published import Table, list_papers, load_published
from reproduce.plan import build_plan
from reproduce.recipes import check_recipe, list_recipes, load_recipe, load_recipe_file
from harness.config import ConfigError, from_dict

# ---------------------------------------------------------------------------------------------
# cell statuses


@pytest.mark.parametrize("published, measured, ci, tol, want", [
    (50.0, None, None, 1.0, NOT_RUN),
    (None, None, None, 1.0, NOT_RUN),
    (None, 40.0, (30.0, 50.0), 1.0, MISSING),
    (50.0, 50.5, None, 1.0, AGREES),            # within tolerance, no interval
    (50.0, 40.0, (35.0, 52.0), 1.0, AGREES),    # published inside the interval
    (50.0, 40.0, (35.0, 45.0), 1.0, BELOW),
    (50.0, 60.0, (55.0, 65.0), 1.0, ABOVE),
    (50.0, 51.0, (50.5, 51.5), 1.0, AGREES),    # |delta| == tolerance agrees
    (50.0, 51.01, (50.5, 51.5), 1.0, ABOVE),
])
def test_cell_status(published, measured, ci, tol, want):
    assert cell_status(published, measured, ci, tol) == want


finite = st.floats(-100, 200, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(p=finite, m=finite, lo=finite, w=st.floats(0, 50), tol=st.floats(0, 5))
def test_cell_status_property(p, m, lo, w, tol):
    ci = (lo, lo + w)
    s = cell_status(p, m, ci, tol)
    agrees = ci[0] <= p <= ci[1] or abs(m - p) <= tol
    assert (s == AGREES) == agrees
    if not agrees:
        assert s == (ABOVE if m > p else BELOW)


# ---------------------------------------------------------------------------------------------
# bootstrap


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([0.0, 100.0]), min_size=1, max_size=60))
def test_bootstrap_mean_contains_the_mean_and_matches_evals_stats(values):
    lo, hi = bootstrap_mean(values, n_resamples=300)
    mean = float(np.mean(values))
    assert lo <= mean + 1e-9 and mean - 1e-9 <= hi
    assert 0.0 <= lo <= hi <= 100.0
    # one group through bootstrap_derived is the same resampling as evals.stats.bootstrap_ci
    lo2, hi2 = bootstrap_derived(lambda x: x[:, 0], [values], n_resamples=300)
    assert (lo2, hi2) == pytest.approx((lo, hi))


def test_bootstrap_degenerate_and_shrinking():
    assert bootstrap_mean([100.0] * 10) == (100.0, 100.0)
    rng = np.random.default_rng(1)
    small = rng.integers(0, 2, 20) * 100.0
    big = rng.integers(0, 2, 2000) * 100.0
    w_small = np.subtract(*bootstrap_mean(small)[::-1])
    w_big = np.subtract(*bootstrap_mean(big)[::-1])
    assert w_big < w_small / 4  # ~1/sqrt(n): 10x fewer samples, ~3x wider; 100x -> ~10x


def test_bootstrap_of_an_average_and_a_difference():
    a, b = [0.0, 100.0] * 50, [100.0] * 30 + [0.0] * 70
    lo, hi = bootstrap_derived(lambda x: x.mean(axis=1), [a, b])
    assert lo < (50 + 30) / 2 < hi
    lo, hi = bootstrap_derived(lambda x: x[:, 0] - x[:, 1], [a, b])
    assert lo < 20 < hi
    lo, hi = bootstrap_derived(lambda x: x[:, 0] - x[:, 1], [[100.0] * 5, [0.0] * 5])
    assert (lo, hi) == (100.0, 100.0)


def test_per_sample_values_use_the_field_that_matches_the_summary():
    recs = [{"correct": True, "score": 1.0}, {"correct": False, "score": 0.5}]
    assert per_sample_values(recs, 75.0) == [100.0, 50.0]       # partial credit: score, not correct
    assert per_sample_values(recs, 50.0) == [100.0, 0.0]
    assert per_sample_values(recs, 10.0) is None                # nothing matches: no bootstrap from records
    assert per_sample_values([], None) is None


# ---------------------------------------------------------------------------------------------
# diff of a table, with a derived average column and a delta row

TABLE = {
    "id": "table1", "kind": "results", "caption": "c",
    "columns": [{"key": "a", "label": "A"}, {"key": "b", "label": "B"}, {"key": "avg", "label": "AVG"}],
    "rows": [
        {"key": "base", "label": "Base", "values": {"a": 10.0, "b": 20.0, "avg": 15.0}},
        {"key": "ours", "label": "Ours", "values": {"a": 30.0, "b": None, "avg": 25.0}},
        {"key": "other", "label": "Other", "values": {"a": 1.0, "b": 2.0, "avg": 1.5}},
        {"key": "gain", "label": "gain", "values": {"a": 20.0, "b": None, "avg": 10.0},
         "delta": {"kind": "difference", "of": "ours", "over": "base"}},
    ],
    "average": {"column": "avg", "of": ["a", "b"]},
}


def test_diff_table_statuses_derived_cells_and_nothing_dropped():
    table = from_dict(Table, TABLE)
    m = {("", "base"): {"a": Measurement(10.2, (5.0, 15.0), 10, [0.0, 20.4] * 5),
                        "b": Measurement(40.0, (30.0, 50.0), 10, [40.0] * 10)},
         ("", "ours"): {"a": Measurement(30.0, (29.0, 31.0), 10, [30.0] * 10),
                        "b": Measurement(10.0, (9.0, 11.0), 10, [10.0] * 10)}}
    d = diff_table(table, m, {("", "other"): "needs x/y (paper profile)", ("", "gain"): "derived row"},
                   paper="p", profile="smoke", tolerance=1.0)
    cells = {(c.row, c.column): c for c in d.cells}
    assert len(d.cells) == 4 * 3                       # every published cell is reported
    assert cells[("base", "a")].status == AGREES
    assert cells[("base", "b")].status == ABOVE
    assert cells[("ours", "b")].status == MISSING and cells[("ours", "b")].measured == 10.0
    assert cells[("other", "a")].status == NOT_RUN and "needs x/y" in cells[("other", "a")].reason
    avg = cells[("base", "avg")]
    assert avg.measured == pytest.approx((10.2 + 40.0) / 2) and avg.derived and avg.ci95 is not None
    assert avg.status == ABOVE
    assert cells[("ours", "avg")].measured == pytest.approx(20.0) and cells[("ours", "avg")].status == BELOW
    gain = cells[("gain", "a")]
    assert gain.measured == pytest.approx(30.0 - 10.2) and gain.status == AGREES  # |19.8 - 20| <= 1
    assert cells[("gain", "b")].status == MISSING      # paper prints none; measured -30 still shown
    assert cells[("gain", "b")].measured == pytest.approx(-30.0)
    assert d.counts()[NOT_RUN] == 3


# ---------------------------------------------------------------------------------------------
# regression check


def _report(values: dict[str, float | None], hib: bool = True) -> dict:
    return {"cells": [{"table": "t", "group": "", "row": r, "column": "a", "measured": v, "status": "x",
                       "reason": "", "higher_is_better": hib} for r, v in values.items()]}


def test_check_regressions():
    base = _report({"r1": 50.0, "r2": 40.0, "r3": None})
    assert check_regressions(_report({"r1": 49.5, "r2": 40.0, "r3": None}), base, 1.0) == []
    out = check_regressions(_report({"r1": 48.0, "r2": 45.0, "r3": 10.0}), base, 1.0)
    assert len(out) == 1 and "r1" in out[0]
    assert len(check_regressions(_report({"r1": 50.0, "r2": None}), base, 1.0)) == 1      # not run now
    assert len(check_regressions(_report({"r1": 50.0}), base, 1.0)) == 1                  # dropped cell
    lower = _report({"r1": 10.0}, hib=False)
    assert len(check_regressions(_report({"r1": 12.0}, hib=False), lower, 1.0)) == 1


def test_check_cli_exit_codes(tmp_path, capsys):
    b, ok, bad = tmp_path / "b.json", tmp_path / "ok.json", tmp_path / "bad.json"
    b.write_text(json.dumps(_report({"r1": 50.0})))
    ok.write_text(json.dumps(_report({"r1": 49.5})))
    bad.write_text(json.dumps(_report({"r1": 40.0})))
    assert main(["check", str(ok), "--baseline", str(b), "--tolerance", "1"]) == 0
    assert main(["check", str(bad), "--baseline", str(b), "--tolerance", "1"]) == 1
    assert "REGRESSION" in capsys.readouterr().out
    assert main(["check", str(bad), "--baseline", str(b), "--tolerance", "20"]) == 0
    assert main(["check", str(tmp_path / "nope.json"), "--baseline", str(b), "--tolerance", "1"]) == 2
    (tmp_path / "junk.json").write_text("{not json")
    assert main(["check", str(tmp_path / "junk.json"), "--baseline", str(b), "--tolerance", "1"]) == 2


# ---------------------------------------------------------------------------------------------
# the project's recipes against the published tables and the method registry


def test_every_paper_has_a_recipe_matching_its_published_tables():
    from methods.registry import METHODS
    assert set(list_recipes()) == set(list_papers()) == {"vold", "reopold", "vgs", "ptdpo"}
    for paper in list_recipes():
        recipe = load_recipe(paper)
        assert check_recipe(recipe, load_published(recipe.published), METHODS) == [], paper


def test_check_recipe_reports_mismatches():
    from methods.registry import METHODS
    recipe = load_recipe("vold")
    published = load_published("vold")
    t = recipe.table("table1")
    t.rows = t.rows[:-1]
    t.columns = t.columns[1:]
    recipe.stages[0].method = "no_such_method"
    problems = check_recipe(recipe, published, METHODS)
    assert any("published row vold has no recipe row" in p for p in problems)
    assert any("published column mmmu_pro_vision has no recipe column" in p for p in problems)
    assert any("no_such_method" in p for p in problems)


def test_recipe_errors_name_file_and_key(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text(yaml.safe_dump({"paper": "x", "tables": [], "stages": [
        {"id": "s", "method": "sft", "init": "nobody/model", "data": "d"}]}))
    with pytest.raises(ConfigError, match=r"x.yaml.*nobody/model"):
        load_recipe_file(bad)
    bad.write_text(yaml.safe_dump({"paper": "x", "tables": [], "bogus": 1}))
    with pytest.raises(ConfigError, match=r"x.yaml: bogus: unknown key"):
        load_recipe_file(bad)


def test_list_shows_every_table_of_the_four_papers(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for paper in ("vold", "reopold", "vgs", "ptdpo"):
        for t in load_published(paper).tables:
            assert f"\n{paper}:" in out and t.id in out


# ---------------------------------------------------------------------------------------------
# run_table end to end with fake trainers and a fake evals.run: sharing, statuses, resume, reports


@dataclass
class FakeSpec:
    implemented: bool


METHODS_FAKE = {"sft": FakeSpec(True), "grpo": FakeSpec(True), "vold": FakeSpec(False)}

RECIPE = {
    "paper": "toy", "smoke_model": "qwen2_5_vl",
    "checkpoints": {"org/base": {"role": "base", "smoke": "qwen2_5_vl"},
                    "org/teacher": {"role": "teacher", "smoke": "qwen3"},
                    "other/trained": {"role": "published"}},
    "stages": [
        {"id": "sft", "method": "sft", "init": "org/base", "data": {"paper": "mot", "smoke": "smoke-text-math"},
         "paper": {"steps": 4000}, "compute": "32 A100"},
        {"id": "rl", "method": "grpo", "init": "sft", "data": "orz", "paper": {"steps": 60}},
        {"id": "vold", "method": "vold", "init": "sft", "teacher": "org/teacher", "data": "orz"},
    ],
    "evaluation": {"smoke": {"limit": 3, "source": "smoke"}},
    "tables": [
        {"id": "table1",
         "columns": [{"key": "a", "benchmark": "bench_a"}, {"key": "b", "benchmark": "bench_b", "metric": "sub"},
                     {"key": "avg", "derived": True}],
         "rows": [{"key": "base", "model": {"hub": "org/base"}},
                  {"key": "ours", "model": {"stages": ["sft", "rl"]}},
                  {"key": "other", "model": {"hub": "other/trained"}},
                  {"key": "vold", "model": {"stages": ["sft", "vold"]}},
                  {"key": "gain", "derived": True}]},
        {"id": "table2",
         "columns": [{"key": "a", "benchmark": "bench_a"}],
         "rows": [{"key": "sft_only", "model": {"stages": ["sft"]}},
                  {"key": "ours", "model": {"stages": ["sft", "rl"]}},
                  {"key": "ours16", "model": {"stages": ["sft", "rl"]}, "mode": "sample", "k": 16,
                   "temperature": 1.0}]},
    ],
}

PUBLISHED = {
    "paper": "toy", "title": "Toy", "source": "test",
    "tables": [
        {**TABLE, "rows": [{"key": "base", "label": "Base", "values": {"a": 10.0, "b": 20.0, "avg": 15.0}},
                           {"key": "ours", "label": "Ours", "values": {"a": 30.0, "b": None, "avg": None}},
                           {"key": "other", "label": "Other", "values": {"a": 1.0, "b": 2.0, "avg": 1.5}},
                           {"key": "vold", "label": "VOLD", "values": {"a": 5.0, "b": 5.0, "avg": 5.0}},
                           {"key": "gain", "label": "gain", "values": {"a": 20.0, "b": None, "avg": None},
                            "delta": {"kind": "difference", "of": "ours", "over": "base"}}]},
        {"id": "table2", "kind": "results", "caption": "t2", "columns": [{"key": "a", "label": "A"}],
         "rows": [{"key": "sft_only", "label": "SFT", "values": {"a": 1.0}},
                  {"key": "ours", "label": "Ours", "values": {"a": 30.0}},
                  {"key": "ours16", "label": "Ours@16", "values": {"a": 40.0}}]},
    ],
}


class Fakes:
    def __init__(self):
        self.trained: list[tuple[str, dict]] = []
        self.evaluated: list[tuple[str, list[str], str, int]] = []
        self.new_records = 0

    def train_fn(self, method: str):
        def train(overrides: dict, out_dir: Path, profile: str) -> Path:
            self.trained.append((method, dict(overrides)))
            out_dir = Path(out_dir)
            (out_dir / "final").mkdir(parents=True, exist_ok=True)
            with (out_dir / "metrics.jsonl").open("w") as f:
                for step in range(1, 4):
                    f.write(json.dumps({"step": step, "reward_mean": 0.1 * step, "val/acc": 0.2 * step}) + "\n")
            return out_dir / "final"
        return train

    def eval_fn(self, model, benchmarks, *, out_dir, limit, mode, k, **kw):
        self.evaluated.append((model, list(benchmarks), mode, k))
        for b in benchmarks:
            d = Path(out_dir) / b
            d.mkdir(parents=True, exist_ok=True)
            recs_path = d / "records.jsonl"
            have = {json.loads(x)["id"] for x in recs_path.read_text().splitlines()} if recs_path.exists() else set()
            with recs_path.open("a") as f:
                for i in range(limit):
                    if f"{b}-{i}" not in have:  # resume: recorded ids are skipped
                        self.new_records += 1
                        f.write(json.dumps({"id": f"{b}-{i}", "score": float(i % 2), "correct": bool(i % 2)}) + "\n")
            recs = [json.loads(x) for x in recs_path.read_text().splitlines()]
            acc = 100.0 * sum(r["score"] for r in recs) / len(recs)
            (d / "summary.json").write_text(json.dumps({
                "benchmark": b, "n": len(recs), "accuracy": acc, "ci95": [0.0, 100.0],
                "metrics": {"sub": 12.5}, "metric_ci95": {"sub": [5.0, 20.0]}, "mode": mode, "k": k}))
        return {}


def write_toy(tmp_path: Path, recipe: dict = RECIPE, published: dict = PUBLISHED) -> tuple[Path, Path]:
    """The toy recipe and published table as files: (recipe dir, published dir)."""
    rdir, pdir = tmp_path / "recipes", tmp_path / "published"
    rdir.mkdir()
    pdir.mkdir()
    (rdir / "toy.yaml").write_text(yaml.safe_dump(recipe))
    (pdir / "toy.yaml").write_text(yaml.safe_dump(published))
    return rdir, pdir


@pytest.fixture
def toy(tmp_path):
    rdir, pdir = write_toy(tmp_path)
    fakes = Fakes()
    kw = dict(methods=METHODS_FAKE, train_fn=fakes.train_fn, eval_fn=fakes.eval_fn,
              smoke_path=lambda kind: f"/tiny/{kind}", recipe_dir=rdir, published_dir=pdir)
    return fakes, kw, tmp_path / "run"


def test_run_table_statuses_sharing_and_reports(toy):
    fakes, kw, out = toy
    res = run_table("toy", "table1", "smoke", out, **kw)
    # two stages trained (sft once, then rl from its output); vold is not implemented
    assert [m for m, _ in fakes.trained] == ["sft", "grpo"]
    sft_over, rl_over = fakes.trained[0][1], fakes.trained[1][1]
    assert sft_over["model"] == "smoke:qwen2_5_vl" and sft_over["data"] == "smoke-text-math"
    assert "steps" not in sft_over                        # paper settings do not leak into smoke
    assert rl_over["model"].endswith("/final") and "sft-" in rl_over["model"]
    # the base row is the tiny stand-in; the trained model is evaluated from its final dir
    models = [e[0] for e in fakes.evaluated]
    assert "/tiny/qwen2_5_vl" in models and any(m.endswith("final") and "/rl-" in m for m in models)
    rep = res["report"]
    cells = {(c["row"], c["column"]): c for c in rep["cells"]}
    assert len(rep["cells"]) == 5 * 3
    assert cells[("other", "a")]["status"] == NOT_RUN
    assert cells[("other", "a")]["reason"] == "needs other/trained (paper profile)"
    assert cells[("vold", "b")]["status"] == NOT_RUN and cells[("vold", "b")]["reason"] == "not implemented (vold)"
    assert cells[("base", "a")]["measured"] == pytest.approx(100 / 3)   # records 0,1,0 -> 33.3
    assert cells[("base", "b")]["measured"] == 12.5 and cells[("base", "b")]["ci95"] == [5.0, 20.0]
    assert cells[("ours", "avg")]["status"] == MISSING
    assert cells[("gain", "a")]["measured"] == pytest.approx(0.0)
    assert rep["smoke"] and rep["profile"] == "smoke"
    for ext, path in res["paths"].items():
        text = Path(path).read_text()
        assert "SMOKE PROFILE" in text, ext
    html = Path(res["paths"]["html"]).read_text()
    assert html.count("data:image/png;base64,") == 2            # columns plot + learning curves
    assert "not implemented (vold)" in Path(res["paths"]["md"]).read_text()


def test_resume_and_sharing_across_tables(toy):
    fakes, kw, out = toy
    run_table("toy", "table1", "smoke", out, **kw)
    n_trained, n_records = len(fakes.trained), fakes.new_records
    assert n_records == 2 * 2 * 3          # two runnable models x two benchmarks x limit 3
    run_table("toy", "table1", "smoke", out, **kw)
    assert len(fakes.trained) == n_trained and fakes.new_records == n_records      # nothing recomputed
    # table2 in the same run dir reuses sft and rl; only new evaluations (sample k=16) run
    res = run_table("toy", "table2", "smoke", out, **kw)
    assert len(fakes.trained) == n_trained
    assert any(e[2] == "sample" and e[3] == 16 for e in fakes.evaluated)
    assert {c["row"] for c in res["report"]["cells"] if c["measured"] is not None} == {"sft_only", "ours", "ours16"}
    # report RUN_DIR regenerates both tables from the directory alone
    from reproduce.report import regenerate
    written = regenerate(out, published_dir=kw["published_dir"])
    assert sorted(p["json"].name for p in written) == ["table1.json", "table2.json"]
    # a stage whose output vanished is retrained
    state = json.loads((out / "state.json").read_text())
    sft_dir = next(d for d in state["stages"] if d.startswith("stages/sft-"))
    import shutil
    shutil.rmtree(out / sft_dir / "final")
    run_table("toy", "table2", "smoke", out, rows=["sft_only"], **kw)
    assert [m for m, _ in fakes.trained[n_trained:]] == ["sft"]


def test_failed_stage_is_reported_not_dropped(toy):
    fakes, kw, out = toy

    def broken(method):
        def train(overrides, out_dir, profile):
            raise RuntimeError("out of memory")
        return train if method == "grpo" else fakes.train_fn(method)

    res = run_table("toy", "table1", "smoke", out, **{**kw, "train_fn": broken})
    cells = {(c["row"], c["column"]): c for c in res["report"]["cells"]}
    assert cells[("ours", "a")]["status"] == NOT_RUN
    assert "training failed: RuntimeError: out of memory" in cells[("ours", "a")]["reason"]
    assert cells[("base", "a")]["measured"] is not None


def test_dry_run_prints_plan_with_compute(toy):
    fakes, kw, out = toy
    res = run_table("toy", "table1", "paper", out, dry_run=True, **kw)
    text = res["plan_text"]
    assert "32 A100" in text and "not stated" in text and '"steps": 4000' in text
    assert "not implemented (vold)" in text
    assert not fakes.trained and not fakes.evaluated and not out.exists()


def test_unknown_rows_are_an_error(toy):
    fakes, kw, out = toy
    with pytest.raises(KeyError, match="unknown rows"):
        run_table("toy", "table1", "smoke", out, rows=["nope"], **kw)


def test_smoke_report_label_absent_in_paper_profile(toy):
    from reproduce.report import to_markdown
    fakes, kw, out = toy
    res = run_table("toy", "table2", "smoke", out, **kw)
    rep = dict(res["report"], smoke=False, profile="paper")
    assert "SMOKE PROFILE" not in to_markdown(rep)
    assert math.isfinite(res["report"]["tolerance"])



def test_column_without_an_evals_benchmark_is_reported_not_run_and_spares_the_row(tmp_path, monkeypatch):
    """A column naming a benchmark evals lacks (here REOPOLD Table 6's Pixel-Reasoner column, with
    the benchmark hidden from the registry, as before it existed): the row's evaluation must still
    cover its other columns, and the cell must say why it was not run."""
    import reproduce.report as report
    import reproduce.runner as runner
    from reproduce.plan import benchmark_available

    assert benchmark_available("vstar") and benchmark_available("pixel_reasoner")
    hidden = lambda name: name != "pixel_reasoner" and benchmark_available(name)  # noqa: E731
    monkeypatch.setattr(runner, "benchmark_available", hidden)
    monkeypatch.setattr(report, "benchmark_available", hidden)
    calls = []

    def fake_evals_run(model, benchmarks, **kw):  # stands in for evals.run (the default evaluator)
        calls.append(list(benchmarks))
        return {}

    monkeypatch.setattr(runner, "_default_eval", lambda: fake_evals_run)
    # the paper profile: the teacher row is a hub checkpoint, evaluated as-is (no training)
    res = run_table("reopold", "table6", "paper", tmp_path / "run", rows=["pixel_reasoner_7b"],
                    preflight=False)
    assert calls and all("pixel_reasoner" not in c for c in calls) and any("vstar" in c for c in calls)
    cell = next(c for c in res["report"]["cells"]
                if c["row"] == "pixel_reasoner_7b" and c["column"] == "pixel_reasoner")
    assert cell["status"] == NOT_RUN and "not in evals" in cell["reason"]


# ---------------------------------------------------------------------------------------------
# row labels name the model that is actually evaluated; "(val.)" columns evaluate a validation split


@pytest.mark.parametrize("profile", ["smoke", "paper"])
def test_every_row_label_names_the_model_it_evaluates(profile):
    """A model shared by several rows (one smoke stand-in for a 3B, a 7B and a 32B checkpoint; one
    smoke training run for a 3B and a 7B recipe stage) must not lend the first row's label to the
    others: each row says what it asked for and, where it differs, what is evaluated instead."""
    from reproduce.plan import build_plan
    for paper in list_recipes():
        recipe = load_recipe(paper)
        plan = build_plan(recipe, [t.id for t in recipe.tables], profile)
        for t in recipe.tables:
            planned = {(r.group, r.key): r for r in plan.tables[t.id].rows}
            for r in t.rows:
                if r.derived:
                    continue
                pr = planned[(r.group, r.key)]
                model = plan.models[pr.model]
                where = f"{paper} {t.id} {r.group}/{r.key}: {pr.label!r}"
                spec = r.model
                if spec.hub is not None:
                    assert spec.hub in pr.label, where
                    if "smoke" in model.source:
                        assert profile == "smoke", where
                        assert model.source["smoke"] == recipe.checkpoints[spec.hub].smoke, where
                        assert pr.label.split(" [smoke: ")[0] == (  # [smoke: ...]: a capped sample count
                            f"tiny {model.source['smoke']} (smoke stand-in for {spec.hub})"), where
                    elif "stage" in model.source:  # a trained smoke stand-in (checkpoint smoke_stage)
                        sid = recipe.checkpoints[spec.hub].smoke_stage
                        assert profile == "smoke" and plan.stages[model.source["stage"]].id == sid, where
                        assert pr.label.startswith(f"{sid} (smoke stand-in for {spec.hub}"), where
                    else:
                        assert model.source == {"hub": spec.hub}, where
                        assert pr.label.split(" [smoke: ")[0] == spec.hub, where
                    other = {h for h in recipe.checkpoints if h != spec.hub and h not in spec.hub}
                    assert not any(h in pr.label for h in other), where
                elif spec.stages:
                    assert pr.label.startswith(" -> ".join(spec.stages)), where
                    evaluated = plan.stages[model.source["stage"]]
                    assert spec.stages[-1] in [evaluated.id] + evaluated.aliases, where
                    if evaluated.id != spec.stages[-1]:   # trained once under another stage's id
                        assert evaluated.id in pr.label and model.id in pr.label, where
                else:
                    assert pr.label == spec.missing, where


def test_reopold_table2_smoke_labels_each_size_by_its_own_checkpoint(tmp_path):
    """The reported bug: both base rows read 'smoke stand-in for xyliu6/NoisyRollout-Geo3K-32B' and
    the 7B rows showed the 3B runs."""
    from reproduce.plan import build_plan, format_plan
    plan = build_plan(load_recipe("reopold"), ["table2"], "smoke")
    labels = {(r.group, r.key): r.label for r in plan.tables["table2"].rows}
    assert labels[("teacher", "qwen2_5_vl_32b_noisyrollout")].endswith("stand-in for xyliu6/NoisyRollout-Geo3K-32B)")
    assert labels[("qwen2_5_vl_3b", "qwen2_5_vl_3b")].endswith("stand-in for Qwen/Qwen2.5-VL-3B-Instruct)")
    assert labels[("qwen2_5_vl_7b", "qwen2_5_vl_7b")].endswith("stand-in for Qwen/Qwen2.5-VL-7B-Instruct)")
    assert labels[("qwen2_5_vl_3b", "rkl")] == "vis3b_rkl"
    assert labels[("qwen2_5_vl_7b", "rkl")].startswith("vis7b_rkl (in the smoke profile the same run as vis3b_rkl")
    assert "Qwen/Qwen2.5-VL-7B-Instruct" in format_plan(plan, "table2")
    # the report's row table shows the per-row label, also for a model shared with an earlier row
    from reproduce.report import _row_model_label
    row7 = next(r for r in plan.tables["table2"].rows if r.key == "qwen2_5_vl_7b")
    assert _row_model_label(plan, row7) == labels[("qwen2_5_vl_7b", "qwen2_5_vl_7b")]
    assert plan.models[row7.model].label != labels[("qwen2_5_vl_7b", "qwen2_5_vl_7b")]  # the shared model's


def test_validation_columns_evaluate_a_validation_split():
    """A column printed as '(val.)' (VOLD Table B1: Geo3K validation accuracy) must evaluate a
    validation split. (The converse does not hold: InfoVQA's public answers are its validation split.)"""
    from evals.benchmarks import REGISTRY
    seen = 0
    for paper in list_recipes():
        recipe = load_recipe(paper)
        published = load_published(recipe.published)
        for t in recipe.tables:
            pcols = {c.key: c for c in published.table(t.id).columns}
            for c in t.columns:
                if c.derived or c.benchmark not in REGISTRY:
                    continue
                splits = REGISTRY[c.benchmark].splits
                if "(val" in pcols[c.key].label.lower():
                    seen += 1
                    assert all(s.startswith("val") for s in splits), (paper, t.id, c.key, splits)
    assert seen >= 1


# ---------------------------------------------------------------------------------------------
# profile-specific stand-ins: a checkpoint whose smoke stand-in is a (smoke-only) stage


def _standin_recipe() -> dict:
    recipe = {
        "paper": "toy", "smoke_model": "qwen2_5_vl",
        "checkpoints": {"org/base": {"role": "base", "smoke": "qwen2_5_vl"},
                        "org/warm": {"role": "base", "smoke": "qwen2_5_vl", "smoke_stage": "warm_smoke"}},
        "stages": [
            {"id": "warm_smoke", "method": "sft", "init": "org/base", "data": "smoke-tool-traces",
             "profiles": ["smoke"]},
            {"id": "rl", "method": "grpo", "init": "org/warm", "data": {"paper": "orz", "smoke": "smoke-visual"}},
        ],
        "tables": [{"id": "t", "columns": [{"key": "a", "benchmark": "bench_a", "tool_rounds": 5}],
                    "rows": [{"key": "warm", "model": {"hub": "org/warm"}},
                             {"key": "rl", "model": {"stages": ["rl"]}}]}],
        "evaluation": {"smoke": {"source": "smoke", "max_tool_rounds": 1}},
    }
    return recipe


def _load_dict(tmp_path, data):
    f = tmp_path / "toy.yaml"
    f.write_text(yaml.safe_dump(data))
    return load_recipe_file(f)


def test_smoke_stage_stands_in_for_a_checkpoint_only_in_smoke(tmp_path):
    recipe = _load_dict(tmp_path, _standin_recipe())
    smoke = build_plan(recipe, ["t"], "smoke", METHODS_FAKE)
    warm = next(s for s in smoke.stages.values() if s.id == "warm_smoke")
    rl = next(s for s in smoke.stages.values() if s.id == "rl")
    assert rl.init == {"stage": warm.dir}
    rows = {r.key: r for r in smoke.tables["t"].rows}
    assert smoke.models[rows["warm"].model].source == {"stage": warm.dir}
    assert smoke.models[rows["rl"].model].stages == [warm.dir, rl.dir]
    assert "smoke stand-in for org/warm" in rows["warm"].label and "not 5" in rows["warm"].label
    assert {e.tool_rounds for e in smoke.evals.values()} == {1}
    paper = build_plan(recipe, ["t"], "paper", METHODS_FAKE)
    assert [s.id for s in paper.stages.values()] == ["rl"]
    assert next(iter(paper.stages.values())).init == {"hub": "org/warm"}
    assert {e.tool_rounds for e in paper.evals.values()} == {5}
    assert {e.eval_key for e in paper.evals.values()} == {"greedy-k1-tools5"}


@pytest.mark.parametrize("changes, message", [
    ({"checkpoints.org/warm.smoke_stage": "nope"}, "checkpoint org/warm: smoke_stage 'nope' is not a stage id"),
    ({"stages.0.profiles": ["paper"]}, "smoke_stage 'warm_smoke' does not run in the smoke profile"),
    ({"stages.0.profiles": ["tiny"]}, r"stage warm_smoke: profiles \['tiny'\]"),
    ({"stages.0.init": "org/warm"}, "starts from org/warm"),
    ({"tables.0.columns.0.tool_rounds": -1}, "tool_rounds must be >= 0"),
])
def test_stand_in_errors_are_one_line(tmp_path, changes, message):
    data = _standin_recipe()
    for path, value in changes.items():  # the keys hold dots (org/warm): walk by hand
        if path.startswith("checkpoints."):
            data["checkpoints"]["org/warm"]["smoke_stage"] = value
        else:
            _, i, key = path.split(".", 2)
            if path.startswith("stages."):
                data["stages"][int(i)][key] = value
            else:
                data["tables"][0]["columns"][0]["tool_rounds"] = value
    with pytest.raises(ConfigError, match=message) as err:
        _load_dict(tmp_path, data)
    assert "\n" not in str(err.value)


def test_a_smoke_only_stage_cannot_be_planned_in_the_paper_profile(tmp_path):
    data = _standin_recipe()
    data["tables"][0]["rows"].append({"key": "direct", "model": {"stages": ["warm_smoke"]}})
    recipe = _load_dict(tmp_path, data)
    build_plan(recipe, ["t"], "smoke", METHODS_FAKE)
    with pytest.raises(ValueError, match="stage warm_smoke runs only in the smoke profile, not in paper"):
        build_plan(recipe, ["t"], "paper", METHODS_FAKE)
