"""Benchmark loaders: fixture rows in each real schema go through the same ``to_sample`` as hub
data (and as local exports); gold answers round-trip through scoring; bad input gives clear errors."""
from __future__ import annotations

import json

import datasets
import pytest

from harness.errors import DataError

from evals.benchmarks import GROUPS, REGISTRY, get_benchmark, group_average, resolve_names
from tests.test_evals_support import oracle_response

ALL = sorted(REGISTRY)
ISSUE_LIST = ["mmmu_pro", "mmstar", "mathvision", "mathvista", "mathverse", "dynamath", "wemath", "logicvista",
              "geometry3k", "geometry3k_val", "aime24", "aime25", "amc23", "math500", "minerva_math",
              "olympiadbench", "hallusionbench", "vstar", "infovqa", "tallyqa", "mmmu_pro_4", "mathverse_vd",
              "mathverse_vo", "visualpuzzles", "vlms_are_blind", "mmk12", "counting", "mathverse_v"]


def test_every_listed_benchmark_is_registered_and_described():
    for name in ISSUE_LIST:
        b = get_benchmark(name)
        d = b.describe()
        assert d["scoring"] and d["tables"] and d["split"] and d["revision"]
        assert b.hf_id or name == "tallyqa"
    for group, members in GROUPS.items():
        for bench, _ in members:
            assert bench in REGISTRY, (group, bench)


@pytest.mark.parametrize("name", ALL)
def test_smoke_rows_load_and_gold_answers_score_full_marks(name):
    bench = REGISTRY[name]
    samples = bench.load("smoke")
    assert samples and len({s.id for s in samples}) == len(samples)
    for s in samples:
        assert s.prompt.strip() and s.answer
        assert s.id.startswith(f"{name}/")
        if bench.kind == "vision":
            assert s.images and s.images[0].mode == "RGB"
        assert bench.score(s, oracle_response(s))["score"] == 1.0, (s.id, s.answer)
        assert bench.score(s, "Sorry, it is unclear.")["score"] == 0.0


@pytest.mark.parametrize("name", ["mathvista", "wemath", "dynamath", "mmmu_pro_4", "olympiadbench", "vstar"])
def test_local_export_loads_through_the_same_path(name, tmp_path):
    bench = REGISTRY[name]
    rows = bench.smoke_rows(2, seed=3)
    files = bench.smoke_files(rows, seed=3)
    for rel, img in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        img.save(tmp_path / rel)
    for r in rows:
        r.pop("__split__", None)
    path = tmp_path / "data.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    samples = bench.load(path)
    assert len(samples) >= 1
    assert all(bench.score(s, oracle_response(s))["score"] == 1.0 for s in samples)


def test_save_to_disk_directory_and_missing_split(tmp_path):
    bench = REGISTRY["mmstar"]
    dd = datasets.DatasetDict({"val": datasets.Dataset.from_list(bench.smoke_rows(3))})
    dd.save_to_disk(str(tmp_path / "mmstar"))
    assert len(bench.load(tmp_path / "mmstar")) == 3
    dd2 = datasets.DatasetDict({"train": datasets.Dataset.from_list(bench.smoke_rows(1))})
    dd2.save_to_disk(str(tmp_path / "other"))
    with pytest.raises(DataError, match="split 'val' not found"):
        bench.load(tmp_path / "other")


def test_missing_split_on_the_hub_is_a_clear_error(monkeypatch):
    def fake_load_dataset(*a, **kw):
        raise ValueError('Unknown split "testmini". Should be one of [\'test\'].')
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    with pytest.raises(DataError, match="split 'testmini' not found"):
        REGISTRY["mathvista"].load("hub")


def test_tallyqa_has_no_hub_copy():
    with pytest.raises(DataError, match="no canonical Hugging Face copy"):
        REGISTRY["tallyqa"].load("hub")


def test_missing_answer_and_missing_field_name_the_row(tmp_path):
    bench = REGISTRY["mmstar"]
    rows = bench.smoke_rows(2)
    rows[1]["answer"] = ""
    for i, r in enumerate(rows):                       # a jsonl export: images as relative paths
        r["image"].save(tmp_path / f"img{i}.png")
        r["image"] = f"img{i}.png"
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DataError, match=r"row 1: field 'answer': answer is missing"):
        bench.load(path)
    rows = [{k: v for k, v in r.items() if k != "question"} for r in bench.smoke_rows(1)]
    path = tmp_path / "bad.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    with pytest.raises(DataError, match=r"row 0: field 'question': missing field"):
        bench.load(path)
    with pytest.raises(DataError, match="no such file"):
        bench.load(tmp_path / "nope.jsonl")


def test_unknown_benchmark_lists_the_known_ones():
    with pytest.raises(KeyError, match="unknown benchmark 'mathvistaa'.*mathvista"):
        resolve_names("mathvista,mathvistaa")
    assert resolve_names("vgs")[0] == "mmmu_pro_4"
    assert len(resolve_names("all")) == len(REGISTRY)


def test_limit_keeps_whole_problem_groups():
    wemath = REGISTRY["wemath"].load("smoke", limit=1)
    assert {s.meta["problem"] for s in wemath} == {wemath[0].meta["problem"]}
    assert len(wemath) == 3                                         # 2 sub-problems + composite
    dyn = REGISTRY["dynamath"].load("smoke", limit=1)
    assert len(dyn) == 2 and {s.meta["variant"] for s in dyn} == {1, 2}


def test_schema_details():
    mv = REGISTRY["mathvista"].load("smoke", smoke_n=40)
    ints = [s for s in mv if s.meta["answer_type"] == "integer"]
    assert ints and all(s.meta["precision"] == 0 and "integer" in s.prompt for s in ints)
    mmmu = REGISTRY["mmmu_pro"].load("smoke")[0]
    assert "Choices" not in mmmu.prompt and len(mmmu.meta["letters"]) == 10     # options are in the image
    std = REGISTRY["mmmu_pro_4"].load("smoke")[0]
    assert len(std.choices) == 4 and f"(D) {std.choices['D']}" in std.prompt
    geo = REGISTRY["geometry3k"].load("smoke")[0]
    assert "<image>" not in geo.prompt and "\\boxed{}" in geo.prompt
    ol = REGISTRY["olympiadbench"].load("smoke")[0]
    assert "$" not in ol.answer and REGISTRY["olympiadbench"].kind == "text" and not ol.images


def test_group_average():
    summaries = {b: {"accuracy": 10.0 * i, "metrics": {"score_strict": 5.0}} for i, (b, _) in
                 enumerate(GROUPS["vold"])}
    expected = sum(10.0 * i if m == "accuracy" else 5.0 for i, (b, m) in enumerate(GROUPS["vold"])) / 8
    assert group_average(summaries, "vold") == pytest.approx(expected)
    assert group_average({}, "vold") is None
