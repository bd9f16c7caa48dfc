"""reproduce compare (published tables and runs side by side, comparability groups, look-alike pairs,
gains), provenance, and the directory-wide regression check with its JUnit output."""
from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from reproduce.cli import main
from reproduce.compare import CompareError, build_comparison
from reproduce.compare_render import to_html, to_markdown, write_comparison
from reproduce.provenance import provenance_differences
from reproduce.published import PUBLISHED_DIR, list_papers, load_published
from reproduce.regress import REGRESSED, check_dirs, junit_xml

BENCHES = ["mathvista", "mathverse", "wemath"]


@functools.lru_cache(maxsize=None)
def _pub(paper: str):
    return load_published(paper)


@pytest.fixture(scope="module")
def comp_all():
    return build_comparison()


@pytest.fixture(scope="module")
def comp3():
    return build_comparison(benchmarks=BENCHES)


def _cell(comp, paper, table, row, column, group="", source="published"):
    g = f"{group}/" if group else ""
    return next(c for c in comp["cells"] if c["id"] == f"{source}:{paper}/{table}/{g}{row}/{column}")


def _pair(comp, a, b):
    return next(p for p in comp["pairs"] if {p["a"], p["b"]} == {a["group_id"], b["group_id"]})


# ---------------------------------------------------------------------------------------------
# the published tables alone


def test_every_published_cell_appears_exactly_once_in_every_format(comp_all):
    expected = {(p, t.id, r.group, r.key, c.key) for p in list_papers() for t in _pub(p).results_tables()
                for r in t.rows for c in t.columns}
    got = [(c["paper"], c["table"], c["group"], c["row"], c["column"]) for c in comp_all["cells"]]
    assert len(got) == len(set(got)) == len(expected) and set(got) == expected
    assert comp_all["counts"]["published_cells"] == len(expected)
    md, page = to_markdown(comp_all), to_html(comp_all, plots=False)
    md_rows = [ln for ln in md.splitlines() if re.match(r"^\| \S+#\d+ +\| published ", ln)]
    assert len(md_rows) == len(expected)
    assert len(re.findall(r"<tr><td>[^<]+#\d+</td><td>published</td>", page)) == len(expected)
    # every cell is in exactly one comparability group
    members = [cid for g in comp_all["groups"] for cid in g["cells"]]
    assert sorted(members) == sorted(c["id"] for c in comp_all["cells"])


def test_comparability_groups_of_hand_checked_cells(comp3):
    vold1 = _cell(comp3, "vold", "table1", "qwen2_5_vl_3b", "mathvista")
    vold2 = _cell(comp3, "vold", "table2", "qwen2_5_vl_3b", "mathvista")
    vold5 = _cell(comp3, "vold", "table5", "teacher_qwen3_8b", "mathvista")
    assert vold1["group_id"] == vold2["group_id"] == vold5["group_id"]          # one paper, one protocol
    assert vold1["student"] == vold5["student"] == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert vold5["teacher"] == "Qwen/Qwen3-8B + vold_traces, Qwen/Qwen3-8B"
    # REOPOLD's Qwen2.5-VL-3B on MathVista: same student, another judge and framework -> flagged
    reo = _cell(comp3, "reopold", "table2", "qwen2_5_vl_3b", "mathvista", "qwen2_5_vl_3b")
    assert reo["student"] == vold1["student"] and reo["group_id"] != vold1["group_id"]
    p = _pair(comp3, reo, vold1)
    assert p["flagged"] and p["why_flagged"] == "same base model"
    assert any("answer judge llm:gemini-2.0-flash-001 vs llm:gpt-4o-mini" in r for r in p["reasons"])
    assert any("framework" in r for r in p["reasons"])
    # REOPOLD's 60-step table4 rows are Table 2's runs: same group
    assert _cell(comp3, "reopold", "table4", "reopold", "mathvista", "qwen2_5_vl_3b_60_steps")["group_id"] == \
        _cell(comp3, "reopold", "table2", "reopold", "mathvista", "qwen2_5_vl_3b")["group_id"]
    # VGS Acc@1 vs Acc@16 of one model: not comparable (decoding, k)
    acc1 = _cell(comp3, "vgs", "table1", "vgs", "mathverse_vision_dominant", "qwen3_vl_2b")
    acc16 = _cell(comp3, "vgs", "table1", "vgs_acc16", "mathverse_vision_dominant", "qwen3_vl_2b")
    assert acc1["benchmark"] == "mathverse" and acc1["variant"] == "vision_dominant"
    p = _pair(comp3, acc1, acc16)
    assert p["flagged"] and p["reasons"] == ["different protocol: decoding greedy, k=1 vs sample T=1, k=16"]
    # PTD-PO: Tables 1 and 2 share the protocol; the MC-only MathVerse is not the vision-dependent split
    pt1 = _cell(comp3, "ptdpo", "table1", "grpo", "mathverse", "qwen3_vl_2b_thinking")
    pt2 = _cell(comp3, "ptdpo", "table2", "grpo", "mathverse", "qwen3_vl_2b_thinking")
    ptv = _cell(comp3, "ptdpo", "table1", "grpo", "mathverse_vision", "qwen3_vl_2b_thinking")
    assert pt1["group_id"] == pt2["group_id"] != ptv["group_id"]
    assert pt1["protocol"]["subset"].startswith("multiple-choice only")
    assert any("version or subset" in r for r in _pair(comp3, pt1, ptv)["reasons"])
    # derived cells (a printed improvement) are their own quantity, never a score group
    imp = _cell(comp3, "vgs", "table1", "improvement_acc1", "mathverse_vision_dominant", "qwen3_vl_2b")
    assert imp["derived"] and imp["quantity"].startswith("difference") and imp["group_id"] != acc1["group_id"]
    # no two papers state a protocol fully and equally: no cross-paper group
    assert comp3["counts"]["cross_paper_groups"] == 0


def test_gains_over_each_papers_own_base_row(comp3):
    gains = {g["cell"]: g for g in comp3["gains"]}
    v = gains["published:vold/table1/vold/mathvista"]
    assert v["base"] == "published:vold/table1/qwen2_5_vl_3b/mathvista" and v["gain"] == pytest.approx(0.7)
    g = gains["published:vgs/table1/qwen3_vl_2b/vgs/mathverse_vision_dominant"]
    assert g["base_value"] == 35.88 and g["gain"] == pytest.approx(22.22)
    # REOPOLD table4 has no base row of its own: the paper's Table 2 base (same student, same protocol)
    r = gains["published:reopold/table4/qwen2_5_vl_3b_300_steps/reopold/mathvista"]
    assert r["base"] == "published:reopold/table2/qwen2_5_vl_3b/qwen2_5_vl_3b/mathvista"
    # PTD-PO prints no base row: no gain; base rows have none either
    assert not any(g["paper"] == "ptdpo" for g in comp3["gains"])
    assert "published:vold/table1/qwen2_5_vl_3b/mathvista" not in gains


def test_a_deliberately_mismatched_protocol_is_flagged(tmp_path):
    pub = tmp_path / "published"
    shutil.copytree(PUBLISHED_DIR, pub)
    text = (pub / "vold.yaml").read_text()
    assert text.count("    protocol: *vold_protocol\n") == 3
    (pub / "vold.yaml").write_text(text.replace(  # Table 2 only: sampled, 8 samples, rule-based
        "    protocol: *vold_protocol\n", "    protocol: {decoding: sample, temperature: 1.0, k: 8, judge: rule, "
        "framework: VLMEvalKit (vLLM inference), source: test}\n", 1))
    comp = build_comparison(benchmarks=["mathvista"], papers=["vold"], published_dir=pub)
    t1, t2 = (_cell(comp, "vold", t, "qwen2_5_vl_3b", "mathvista") for t in ("table1", "table2"))
    assert t1["group_id"] != t2["group_id"]
    p = _pair(comp, t1, t2)
    assert p["flagged"] and p["why_flagged"] == "same base model"
    assert any("decoding not stated, k=1 vs sample T=1, k=8" in r for r in p["reasons"])
    assert any("answer judge llm:gpt-4o-mini vs rule" in r for r in p["reasons"])
    assert "vs" in to_markdown(comp).split("### Not comparable")[1].split("###")[0]


def test_filters_and_errors(comp_all):
    only = build_comparison(benchmarks=["mathvista"], students=["qwen2.5-vl-3b"], methods=["base"])
    assert only["cells"] and all(c["benchmark"] == "mathvista" and c["role"] == "base" and
                                 c["student"] == "Qwen/Qwen2.5-VL-3B-Instruct" for c in only["cells"])
    assert {c["paper"] for c in only["cells"]} == {"vold", "reopold"}
    vold = build_comparison(papers=["vold"], methods=["vold"], benchmarks=["mathvista"])
    assert {c["row"] for c in vold["cells"]} >= {"vold", "teacher_qwen3_4b"}
    with pytest.raises(CompareError, match="unknown benchmark 'mathvistaa'"):
        build_comparison(benchmarks=["mathvistaa"])
    with pytest.raises(CompareError, match="unknown paper"):
        build_comparison(papers=["nope"])


# ---------------------------------------------------------------------------------------------
# runs: synthetic reports (the smoke run is in the slow test)


def fake_report(paper: str, table_id: str, *, profile: str = "smoke", shift: float = 0.0, torch: str = "2.0") -> dict:
    """A report JSON of ``table_id`` whose measured values are the published ones (+ shift), every
    third cell with a 95% interval of +-2, every third with a zero-width one, the rest with none."""
    t = _pub(paper).table(table_id)
    cells = []
    for i, (r, c) in enumerate((r, c) for r in t.rows for c in t.columns):
        v = r.values[c.key]
        m = None if v is None else float(v) + shift
        ci = None if m is None else [[m - 2, m + 2], [m, m], None][i % 3]
        cells.append({"table": table_id, "group": r.group, "row": r.key, "column": c.key, "published": v,
                      "measured": m, "delta": None, "ci95": ci, "n": 100, "status": "agrees", "reason": "",
                      "derived": False, "higher_is_better": True})
    return {"paper": paper, "table": table_id, "profile": profile, "smoke": profile == "smoke",
            "eval_settings": {"limit": 4, "source": "smoke", "engine": "hf", "judge_url": None, "max_new_tokens": 32},
            "columns": [{"key": c.key, "label": c.label, "benchmark": c.benchmark or c.key} for c in t.columns],
            "cells": cells, "provenance": {"code_revision": "abc", "config_hashes": {}, "dataset_revisions": {},
                                           "packages": {"torch": torch}, "hardware": {"cpus": 2}}}


def write_reports(directory: Path, **kw) -> int:
    n = 0
    for paper in list_papers():
        for t in _pub(paper).results_tables():
            d = directory / paper / "report"
            d.mkdir(parents=True, exist_ok=True)
            rep = fake_report(paper, t.id, **kw)
            (d / f"{t.id}.json").write_text(json.dumps(rep))
            n += len(rep["cells"])
    return n


def test_runs_sit_next_to_the_published_rows_and_provenance_differences_are_said(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b" / "table1.json"
    b.parent.mkdir()
    a.write_text(json.dumps(fake_report("vold", "table1", torch="2.0")))
    b.write_text(json.dumps(fake_report("vold", "table1", torch="2.1")))
    (tmp_path / "b" / "plan.json").write_text("{}")  # other JSON files in a directory are skipped
    comp = build_comparison([a, tmp_path / "b"], benchmarks=["mathvista"])
    assert comp["counts"]["measured_cells"] == 10 and comp["smoke"]
    run = _cell(comp, "vold", "table1", "qwen2_5_vl_3b", "mathvista", source="run1")
    pub = _cell(comp, "vold", "table1", "qwen2_5_vl_3b", "mathvista")
    assert run["student"].startswith("smoke:qwen2_5_vl (tiny stand-in for Qwen/Qwen2.5-VL-3B-Instruct")
    p = _pair(comp, run, pub)
    assert p["flagged"] and p["why_flagged"] == "same row"
    assert any(r.startswith("different benchmark data") for r in p["reasons"])
    assert any(r.startswith("different base model") for r in p["reasons"])
    assert comp["provenance"] == [{"a": "run1", "b": "run2", "differences": ["packages.torch: 2.0 != 2.1"]}]
    group = next(g for g in comp["groups"] if g["id"] == run["group_id"])
    assert any("different provenance" in n for n in group["notes"])
    assert "packages.torch: 2.0 != 2.1" in to_markdown(comp)
    paths = write_comparison(comp, tmp_path / "out", plots=False)
    assert json.loads(paths["json"].read_text())["counts"] == comp["counts"]
    assert "SMOKE PROFILE" in paths["md"].read_text() and "SMOKE PROFILE" in paths["html"].read_text()
    assert provenance_differences(None, {"a": 1}) == ["provenance missing in one report (written before "
                                                      "provenance was recorded)"]


def test_compare_cli(tmp_path, capsys):
    assert main(["compare", "--benchmarks", "mathvista", "--papers", "vold,reopold", "--no-plots",
                 "--out", str(tmp_path / "c")]) == 0
    assert {p.name for p in (tmp_path / "c").iterdir()} == {"compare.md", "compare.html", "compare.json"}
    assert "comparability groups" in capsys.readouterr().out
    assert main(["compare", "--benchmarks", "nope", "--out", str(tmp_path / "d")]) == 2
    assert main(["compare", str(tmp_path / "missing"), "--out", str(tmp_path / "d")]) == 2
    (tmp_path / "bad.json").write_text("{oops")
    assert main(["compare", str(tmp_path / "bad.json"), "--out", str(tmp_path / "d")]) == 2
    assert "bad.json" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# directory-wide regression check


def test_directory_check_catches_one_injected_regression_among_hundreds(tmp_path):
    base, now = tmp_path / "baseline", tmp_path / "now"
    n = write_reports(base)
    shutil.copytree(base, now)
    assert n > 1000
    results = check_dirs(now, base, 1.0)
    assert sum(len(v) for v in results.values()) == n
    assert not any(c.status == REGRESSED for v in results.values() for c in v)
    assert main(["check", str(now), "--baseline", str(base), "--junit", str(tmp_path / "ok.xml")]) == 0

    path = now / "vgs" / "report" / "table1.json"
    rep = json.loads(path.read_text())
    wide = next(c for c in rep["cells"] if c["ci95"] and c["ci95"][1] - c["ci95"][0] == 4)   # tolerance 2
    zero = next(c for c in rep["cells"] if c["ci95"] and c["ci95"][0] == c["ci95"][1])      # the floor, 1
    wide["measured"] -= 1.9          # inside its own interval: not a regression
    zero["measured"] -= 1.5          # beyond the floor: the one regression
    path.write_text(json.dumps(rep))
    junit = tmp_path / "junit.xml"
    assert main(["check", str(now), "--baseline", str(base), "--junit", str(junit)]) == 1
    root = ET.parse(junit).getroot()
    assert root.get("failures") == "1" and int(root.get("tests")) == n
    failed = [(s.get("name"), tc.get("name")) for s in root for tc in s if tc.find("failure") is not None]
    g = f"{zero['group']}/" if zero["group"] else ""
    assert failed == [("vgs/table1 (smoke)", f"{g}{zero['row']} [{zero['column']}]")]
    assert "tolerance 1.00 from the floor" in junit_xml(check_dirs(now, base, 1.0))

    # a report gone is a regression; a file that is not JSON, or no baseline, is exit 2
    (now / "vgs" / "report" / "table2.json").unlink()
    res = check_dirs(now, base, 1.0)
    assert [c.message for c in res["vgs/table2 (smoke)"]] == ["in the baseline but missing from the reports"]
    (now / "junk.json").write_text("{not json")
    assert main(["check", str(now), "--baseline", str(base)]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["check", str(base), "--baseline", str(empty)]) == 2
    # two reports of one table in one directory are ambiguous
    dup = tmp_path / "dup"
    shutil.copytree(base / "vold", dup / "x")
    shutil.copytree(base / "vold", dup / "y")
    assert main(["check", str(dup), "--baseline", str(base)]) == 2


def test_directory_check_tolerance_comes_from_the_cells_own_interval():
    from reproduce.regress import cell_tolerance, check_report
    assert cell_tolerance({"measured": 50.0, "ci95": [45.0, 52.0]}, 1.0) == (5.0, "interval")
    assert cell_tolerance({"measured": 50.0, "ci95": [45.0, 52.0], "higher_is_better": False}, 1.0) == (2.0, "interval")
    assert cell_tolerance({"measured": 50.0, "ci95": [50.0, 50.0]}, 1.0) == (1.0, "floor")
    assert cell_tolerance({"measured": 50.0, "ci95": None}, 0.5) == (0.5, "floor")
    base = fake_report("vold", "table1")
    worse = copy.deepcopy(base)
    for c in worse["cells"]:
        if c["measured"] is not None:
            c["measured"] -= 1.5  # inside a +-2 interval, beyond the floor
    statuses = [c.status for c in check_report(worse, base, 1.0, "x")]
    assert statuses.count(REGRESSED) == sum(c["ci95"] is None or c["ci95"][0] == c["ci95"][1]
                                            for c in base["cells"] if c["measured"] is not None)


# ---------------------------------------------------------------------------------------------
# end to end: a real smoke run, compared with the published tables, and checked in CI style


@pytest.mark.slow
def test_smoke_run_compare_and_directory_check_with_junit(tmp_path, capsys):
    from reproduce import run_table

    run = tmp_path / "run"
    res = run_table("vold", "table1", "smoke", run)
    prov = res["report"]["provenance"]
    assert prov["code_revision"] and prov["packages"]["torch"] and prov["dataset_revisions"]["mathvista"]
    assert "## Provenance" in res["paths"]["md"].read_text()

    for args, measured in (([], 0), ([str(run / "report")], 15)):
        out = tmp_path / f"compare{len(args)}"
        assert main(["compare", *args, "--benchmarks", ",".join(BENCHES), "--out", str(out)]) == 0
        comp = json.loads((out / "compare.json").read_text())
        assert comp["counts"]["published_cells"] == 393 and comp["counts"]["measured_cells"] == measured
        page = (out / "compare.html").read_text()
        assert page.count("data:image/png;base64,") >= 3 and (out / "compare.md").is_file()
        assert ("SMOKE PROFILE" in page) == bool(measured)
    flagged = [p for p in comp["pairs"] if p["flagged"] and p["why_flagged"] == "same row"]
    assert flagged and all(any("smoke" in r for r in p["reasons"]) for p in flagged)

    base = tmp_path / "baseline"
    shutil.copytree(run / "report", base)
    junit = tmp_path / "junit.xml"
    assert main(["check", str(run / "report"), "--baseline", str(base), "--junit", str(junit)]) == 0
    assert ET.parse(junit).getroot().get("failures") == "0"
    rep = json.loads((base / "table1.json").read_text())
    cell = next(c for c in rep["cells"] if c["measured"] is not None)
    cell["measured"] += 10.0          # the baseline was better: the current run regressed in this cell
    cell["ci95"] = [cell["measured"], cell["measured"]]
    (base / "table1.json").write_text(json.dumps(rep))
    assert main(["check", str(run / "report"), "--baseline", str(base), "--junit", str(junit)]) == 1
    root = ET.parse(junit).getroot()
    assert root.get("failures") == "1" and int(root.get("tests")) == len(rep["cells"])
    assert "REGRESS" not in capsys.readouterr().err


def test_provenance_says_which_code_trained_each_stage(tmp_path):
    """A report rebuilt later (``reproduce report``) names both the code that built it and the
    code that trained each stage (every session of a resumed stage)."""
    from reproduce.provenance import collect
    from reproduce.report import provenance_lines

    stage = tmp_path / "stages" / "sft-1"
    stage.mkdir(parents=True)
    (stage / "config.yaml").write_text("lr: 1\n")
    (stage / "git_rev.txt").write_text("aaa111\nbbb222\n")
    (tmp_path / "stages" / "untrained").mkdir()
    prov = collect(tmp_path, stage_dirs=["stages/sft-1", "stages/untrained"], code_revision="ccc333")
    assert prov["training_revisions"] == {"stages/sft-1": "aaa111 -> bbb222"}
    lines = provenance_lines({"provenance": prov})
    assert lines[0] == "code revision (this report): ccc333"
    assert lines[1] == "stages trained at: stages/sft-1 aaa111 -> bbb222"
