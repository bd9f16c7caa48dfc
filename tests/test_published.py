"""The published tables (results/published/*.yaml): schema, completeness, and the papers' own arithmetic.

Printed averages and printed gains are recomputed from the printed cells. Where the paper disagrees
with itself the disagreement is listed below (and in the row's YAML note), so a new one - a
transcription slip - fails the test, and the known ones stay visible.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from harness.config import ConfigError
from reproduce.published import (
    PUBLISHED_DIR, check_averages, check_deltas, list_papers, load_published, load_published_file,
)

PAPERS = ["ptdpo", "reopold", "vgs", "vold"]

# Benchmark keys of evals (evals/README.md), plus the ones a table needs beyond them.
BENCHMARKS = {
    "mathvista", "mathverse", "mathvision", "mmmu_pro", "mmstar", "dynamath", "wemath", "logicvista",
    "geometry3k", "geometry3k_val", "aime24", "aime25", "amc23", "math500", "minerva_math", "olympiadbench",
    "hallusionbench", "vstar", "infovqa", "tallyqa", "visualpuzzles", "vlms_are_blind", "mmk12",
    "counting", "pixel_reasoner",
}

# (paper, table, group, row, column): (printed, recomputed mean rounded to 2 decimals)
KNOWN_AVERAGE_DISAGREEMENTS = {
    ("reopold", "table1", "teacher_skywork_or1_math_7b", "sft", "avg"): (51.5, 52.13),
    ("reopold", "table4", "qwen2_5_vl_3b_60_steps", "reopold", "avg"): (51.08, 52.18),
    ("reopold", "table6", "qwen2_5_vl_3b_sft", "qwen2_5_vl_3b_sft", "avg"): (45.83, 52.25),
    ("reopold", "table6", "qwen2_5_vl_3b_sft", "rkl", "avg"): (63.27, 63.5),
    ("vgs", "table1", "qwen3_vl_4b", "vgs", "avg"): (58.12, 58.19),
    ("vgs", "table1", "qwen3_vl_4b", "vgs_acc16", "avg"): (57.27, 57.37),
    ("vgs", "table5", "qwen3_vl_2b", "vgs", "avg"): (46.1, 45.94),
}

# Printed gains (difference / relative %) that differ from the recomputation.
KNOWN_DELTA_DISAGREEMENTS = {
    ("reopold", "table2", "qwen2_5_vl_3b", "reopold_vs_rkl", "geometry3k"): (2.06, 5.18),
    ("reopold", "table2", "qwen2_5_vl_3b", "reopold_vs_rkl", "mathverse"): (26.44, 39.55),
    ("reopold", "table2", "qwen2_5_vl_3b", "reopold_vs_rkl", "mathvision"): (3.39, 6.5),
    ("reopold", "table2", "qwen2_5_vl_3b", "reopold_vs_rkl", "avg"): (4.27, 6.51),
    ("reopold", "table4", "qwen2_5_vl_3b_60_steps", "reopold_vs_rkl", "geometry3k"): (2.06, 5.18),
    ("reopold", "table4", "qwen2_5_vl_3b_60_steps", "reopold_vs_rkl", "mathverse"): (26.4, 39.55),
    ("reopold", "table4", "qwen2_5_vl_3b_60_steps", "reopold_vs_rkl", "mathvision"): (3.39, 6.5),
    ("vgs", "table1", "qwen3_vl_2b", "improvement_acc1", "mmmu_pro_4"): (2.14, 2.24),
    ("vgs", "table1", "qwen3_vl_4b", "improvement_acc1", "avg"): (1.56, 1.48),
    ("vgs", "table1", "qwen3_vl_4b", "improvement_acc16", "avg"): (0.5, 0.41),
}


@pytest.fixture(scope="module")
def papers():
    return {name: load_published(name) for name in PAPERS}


def test_every_paper_has_a_file():
    assert list_papers() == PAPERS


@pytest.mark.parametrize("name", PAPERS)
def test_file_loads_and_is_complete(name, papers):
    paper = papers[name]
    assert paper.paper == name and paper.title and paper.source
    ids = [t.id for t in paper.tables]
    assert len(ids) == len(set(ids)), "table ids must be unique"
    assert any(t.kind == "results" for t in paper.tables)
    assert any(t.kind == "hyperparameters" for t in paper.tables), "hyper-parameter tables are transcribed too"
    for t in paper.tables:
        assert t.caption and t.columns and t.rows, t.id
        ckeys = [c.key for c in t.columns]
        for r in t.rows:
            # nothing silently missing: every column has a value or an explicit null
            assert list(r.values) == ckeys or set(r.values) == set(ckeys), (t.id, r.key)
            if t.kind == "results":
                assert all(v is None or isinstance(v, (int, float)) for v in r.values.values()), (t.id, r.key)
            if any(v is None for v in r.values.values()) and t.kind == "results":
                assert r.note or t.notes, f"{t.id}/{r.key}: null cells need a note saying why"


@pytest.mark.parametrize("name", PAPERS)
def test_result_columns_name_benchmarks(name, papers):
    for t in papers[name].results_tables():
        derived = {a.column for a in t.all_averages()}
        for c in t.columns:
            if c.key in derived or c.delta is not None:
                continue
            bench = c.benchmark or c.key
            assert bench in BENCHMARKS, f"{name} {t.id}: column {c.key} names no known benchmark"
            if c.key not in BENCHMARKS:
                assert c.benchmark and c.metric, f"{name} {t.id}: sub-metric column {c.key} needs benchmark and metric"


def _found(papers, check):
    out = {}
    for name, paper in papers.items():
        for t in paper.tables:
            for d in check(t):
                out[(name, d.table, d.group, d.row, d.column)] = (d.printed, round(d.recomputed, 2))
    return out


def _same(found, known):
    assert sorted(found) == sorted(known), "new or vanished disagreements (cell keys differ)"
    for cell, (printed, recomputed) in known.items():
        assert found[cell] == pytest.approx((printed, recomputed), abs=0.011), cell


def test_printed_averages_match_except_the_known_disagreements(papers):
    _same(_found(papers, check_averages), KNOWN_AVERAGE_DISAGREEMENTS)


def test_printed_gains_match_except_the_known_disagreements(papers):
    _same(_found(papers, check_deltas), KNOWN_DELTA_DISAGREEMENTS)


@pytest.mark.parametrize("known", [KNOWN_AVERAGE_DISAGREEMENTS, KNOWN_DELTA_DISAGREEMENTS])
def test_known_disagreements_are_noted_in_the_yaml(known, papers):
    for (name, tid, group, row, _col) in known:
        note = papers[name].table(tid).row(row, group).note
        assert "KNOWN_" in note, f"{name} {tid} {group}/{row}: the row note must flag the disagreement"


def _flags(found, row, column) -> bool:
    return any(d.row == row.key and d.group == row.group and d.column == column for d in found)


def test_every_printed_average_and_gain_is_actually_checked(papers):
    """Perturb one input cell of every average / delta: the checks must notice."""
    checked = 0
    for paper in papers.values():
        for t in paper.tables:
            for avg in t.all_averages():
                for r in t.result_rows():
                    if all(isinstance(r.values[k], (int, float)) for k in [avg.column, *avg.of]):
                        t2 = copy.deepcopy(t)
                        t2.row(r.key, r.group).values[avg.of[0]] += 100.0  # far beyond any real disagreement
                        assert _flags(check_averages(t2), r, avg.column), (t.id, r.key)
                        checked += 1
            for r in t.rows:
                if r.delta is not None:
                    t2 = copy.deepcopy(t)
                    col = next(k for k, v in r.values.items() if isinstance(v, (int, float)))
                    t2.row(r.key, r.group).values[col] += 100.0  # far beyond any real disagreement
                    assert _flags(check_deltas(t2), r, col), (t.id, r.key)
                    checked += 1
            for c in t.columns:
                if c.delta is not None:
                    r = next(r for r in t.result_rows() if isinstance(r.values[c.key], (int, float)))
                    t2 = copy.deepcopy(t)
                    t2.row(r.key, r.group).values[c.key] += 100.0  # far beyond any real disagreement
                    assert _flags(check_deltas(t2), r, c.key), (t.id, c.key)
                    checked += 1
    assert checked > 100


@pytest.mark.parametrize("paper,table,row,group,column,value", [
    # numbers the prose restates, to catch a slip in transcription
    ("vold", "table1", "vold", None, "mathvision", 28.0),
    ("vold", "table1", "vlaa_thinker_3b", None, "mathvision", 24.4),
    ("vold", "table1", "vold", None, "logicvista", 45.0),
    ("vold", "table1", "vlm_r1_3b_math", None, "mathvista", 62.7),
    ("vold", "table3", "sft_teacher_mot_rl", None, "mmstar", 50.47),
    ("vold", "table5", "teacher_qwen3_4b", None, "logicvista", 42.95),
    ("vold", "table4", "learning_rate", None, "stage1_sft", 5e-5),
    ("reopold", "table3", "reopold_minus_rkl", "teacher_qwen2_5_vl_7b_noisyrollout", "avg", 1.34),
    ("reopold", "table3", "reopold_minus_rkl", "teacher_qwen2_5_vl_32b_noisyrollout_mmk12", "avg", 0.93),
    ("reopold", "table4", "reopold", "qwen2_5_vl_3b_300_steps", "avg", 54.36),
    ("reopold", "table4", "reopold", "qwen2_5_vl_7b_300_steps", "avg", 58.83),
    ("vgs", "table1", "vgs", "qwen3_vl_2b", "avg", 46.10),
    ("vgs", "table1", "standard_opd", "qwen3_vl_2b", "avg", 43.74),
    ("vgs", "table1", "improvement_acc1", "qwen3_vl_2b", "visualpuzzles", 3.68),
    ("vgs", "table1", "vgs", "qwen3_vl_4b", "avg", 58.12),
    ("vgs", "table4", "gamma", "vgs_specific", "value", 2.0),
    ("ptdpo", "table4", "with_ptd", "grpo", "overall_avg_rel", 5.13),
    ("ptdpo", "table4", "with_ptd", "dapo", "overall_avg_rel", 3.00),
    ("ptdpo", "table4", "with_ptd", "gspo", "overall_avg_rel", 1.92),
    ("ptdpo", "table3", "top_k", "ptdpo_specific", "value", 100),
])
def test_numbers_restated_in_the_prose(papers, paper, table, row, group, column, value):
    assert papers[paper].table(table).cell(row, column, group=group) == pytest.approx(value)


SOURCES_DIR = PUBLISHED_DIR / "sources"
REPO_ROOT = PUBLISHED_DIR.parents[1]
HEADER = "@@ "
"""Lines of a sources file that are ours (what follows, where it is in the paper); the rest is verbatim."""


def _source_file(paper) -> Path:
    files = re.findall(r"(results/published/sources/\S+?\.txt)", paper.source)
    assert files == [f"results/published/sources/{paper.paper}.txt"], \
        f"{paper.paper}: `source:` must name results/published/sources/{paper.paper}.txt, not {paper.source!r}"
    path = REPO_ROOT / files[0]
    assert path.is_file(), f"{path} is missing: the provenance of {paper.paper}'s published cells"
    return path


@pytest.mark.parametrize("name", PAPERS)
def test_every_transcribed_number_occurs_in_the_paper_text(name, papers):
    """Provenance: each results cell (up to sign) is a number printed in the verbatim excerpts of the
    paper kept in the repository (results/published/sources/<paper>.txt). Never skipped."""
    paper = papers[name]
    lines = _source_file(paper).read_text().splitlines()
    assert lines and lines[0].startswith(HEADER), f"{name}: the sources file starts with a '@@ ' line naming the paper"
    verbatim = [line for line in lines if not line.startswith(HEADER)]
    assert any(line.strip() for line in verbatim), f"{name}: the sources file holds no excerpt"
    printed = {float(x) for x in re.findall(r"\d+\.\d+|\d+", "\n".join(verbatim))}
    for t in paper.results_tables():
        for r in t.rows:
            for k, v in r.values.items():
                if isinstance(v, (int, float)):
                    assert abs(v) in printed, f"{name} {t.id} {r.group}/{r.key} [{k}] = {v} is not in the excerpts"


@pytest.mark.parametrize("name", PAPERS)
def test_every_excerpt_says_which_paper_and_where(name, papers):
    """Each run of verbatim lines is preceded by a '@@ ' line naming the paper (its arXiv id) and the
    section or table, so that an excerpt can be found in the paper."""
    arxiv = re.search(r"arXiv \d{4}\.\d{4,5}", papers[name].title)
    assert arxiv, f"{name}: the published title carries the arXiv id"
    heading = None
    for line in _source_file(papers[name]).read_text().splitlines():
        if line.startswith(HEADER):
            heading = line
        elif line.strip():
            assert heading is not None and arxiv.group(0) in heading, (name, line[:80])
            assert re.search(r"§|Table|Appendix", heading), (name, heading)


def test_lookups_name_what_exists(papers):
    vold = papers["vold"]
    with pytest.raises(KeyError, match="table1"):
        vold.table("table9")
    with pytest.raises(KeyError, match="several groups"):
        papers["ptdpo"].table("table1").row("grpo")
    with pytest.raises(KeyError, match="no column"):
        vold.table("table1").cell("vold", "mmlu")
    with pytest.raises(KeyError, match="known"):
        load_published("nope")


GOOD = """\
paper: {name}
title: t
source: s
tables:
  - id: table1
    kind: results
    caption: c
    columns: [{{key: mathvista, label: MathVista}}, {{key: avg, label: Avg}}]
    average: {{column: avg, of: [mathvista]}}
    rows:
      - {{key: base, label: Base, values: {{mathvista: 60.0, avg: 60.0}}}}
"""


def _write(tmp_path: Path, text: str, name: str = "toy") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    return p


def test_a_well_formed_toy_file_loads(tmp_path):
    paper = load_published_file(_write(tmp_path, GOOD.format(name="toy")))
    assert paper.table("table1").cell("base", "avg") == 60.0
    assert check_averages(paper.table("table1")) == []


@pytest.mark.parametrize("old,new,key", [
    ("kind: results", "kind: results\n    colour: red", "tables[0].colour"),
    ("label: Base,", "label: Base, group: [a],", "tables[0].rows[0].group"),
    ("mathvista: 60.0, avg", "mathvista: [60.0], avg", "tables[0].rows[0].values.mathvista"),
    ("mathvista: 60.0, avg", "mathvista: sixty, avg", "results cells are numbers"),
    ("mathvista: 60.0, avg: 60.0", "mathvista: 60.0", "no value for column 'avg'"),
    ("kind: results", "kind: result", "tables[0].kind"),
    ("of: [mathvista]", "of: [mathvsta]", "unknown column 'mathvsta'"),
    ("id: table1", "id: Table 1", "table id"),
])
def test_malformed_file_errors_name_the_file_and_key(tmp_path, old, new, key):
    text = GOOD.format(name="toy")
    assert old in text
    path = _write(tmp_path, text.replace(old, new))
    with pytest.raises(ConfigError) as err:
        load_published_file(path)
    assert str(path) in str(err.value) and key in str(err.value)


def test_duplicate_table_ids_and_wrong_paper_name_are_errors(tmp_path):
    text = GOOD.format(name="toy")
    table = text[text.index("  - id: table1"):]
    with pytest.raises(ConfigError, match="duplicate table ids"):
        load_published_file(_write(tmp_path, text + table))
    with pytest.raises(ConfigError, match="differs from the file name"):
        load_published_file(_write(tmp_path, GOOD.format(name="other"), name="toy2"))


def test_published_dir_is_the_repository_folder():
    assert PUBLISHED_DIR.name == "published" and (PUBLISHED_DIR / "vold.yaml").exists()
