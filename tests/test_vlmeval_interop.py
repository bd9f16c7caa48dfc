"""Predictions in VLMEvalKit's prediction-file layout: ``evals run`` writes
``<benchmark>/vlmeval/<model>_<Dataset>.tsv``; VLMEvalKit's own code (its ``load``, its MCQ
evaluator ``mcq_vanilla_eval`` under exact matching, MathVista's ``post_check``, its yes/no
extraction and ``Hallusion_rating``) runs on that file and agrees with our records; a file is read
back and scored by ``evals score-file`` (with our ids, or matched by row order as a file of
VLMEvalKit's own would be)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

import evals
from evals import vlmeval_rules as vr
from evals.cli import main as cli_main
from evals.runner import read_records, score_file
from evals.vlmeval_io import file_name
from tests.test_evals_support import FakeEngine, oracle_response


def mixed(sample, j):
    """Right on about half the samples (by id), a wrong letter / word on the others."""
    if sum(map(ord, sample.id)) % 2:
        return oracle_response(sample)
    wrong = {"yes": "no", "no": "yes"}.get(sample.answer, "Z" if len(sample.answer) == 1 else "0")
    return f"Let me think. The answer is \\boxed{{{wrong}}}."


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("interop")
    summaries = evals.run("fake/model", "mmstar,mathvista,hallusionbench,wemath", out_dir=out,
                          engine=FakeEngine(mixed), source="smoke", smoke_n=8, progress=False)
    return out, summaries


def _table(out, bench):
    path = out / bench / "vlmeval" / file_name("fake/model", bench)
    assert path.name == {"mmstar": "fake_model_MMStar.tsv", "mathvista": "fake_model_MathVista_MINI.tsv",
                         "hallusionbench": "fake_model_HallusionBench.tsv", "wemath": "fake_model_WeMath.tsv"}[bench]
    return path, vr.modules().smp.load(str(path))


def test_vlmeval_mcq_evaluator_on_our_file(run_dir, tmp_path):
    out, _ = run_dir
    path, data = _table(out, "mmstar")
    assert {"index", "question", "answer", "prediction", "A", "B"} <= set(data.columns)
    scored = vr.modules().multiple_choice.mcq_vanilla_eval(None, data.copy(), data, 1, str(tmp_path / "r.pkl"),
                                                           dataset_name="MMStar")
    records = {r["id"]: r for r in read_records(out / "mmstar" / "records.jsonl")}
    assert len(scored) == len(records)
    for _, row in scored.iterrows():
        assert bool(row["hit"]) == records[row["vlmrepro_id"]]["correct"][0]


def test_vlmeval_mathvista_post_check_on_our_file(run_dir):
    out, _ = run_dir
    _, data = _table(out, "mathvista")
    records = {r["id"]: r for r in read_records(out / "mathvista" / "records.jsonl")}
    post_check = vr.modules().mathvista.post_check
    for _, row in data.iterrows():
        line = row.to_dict()
        line["res"] = post_check(line, prefetch=True)      # MathVista_auxeval's prefetch (whole prediction)
        got = post_check(line, prefetch=False) is True      # MathVista_acc's check
        assert got == records[row["vlmrepro_id"]]["correct"][0]


def test_vlmeval_hallusion_rating_on_our_file(run_dir, tmp_path):
    out, summaries = run_dir
    _, data = _table(out, "hallusionbench")
    yorn = vr.modules().yorn
    data["extracted"] = [yorn.YOrN_Extraction(str(p)) for p in data["prediction"]]     # ImageYORNDataset.evaluate
    data["score"] = data["answer"] == data["extracted"]
    scored = tmp_path / "hallusion_auxmatch.tsv"
    data.to_csv(scored, sep="\t", index=False)
    overall = yorn.Hallusion_rating(str(scored)).iloc[0]
    s = summaries["hallusionbench"]
    assert overall["aAcc"] == pytest.approx(s["accuracy"])
    assert overall["fAcc"] == pytest.approx(s["metrics"]["figure_acc"])
    assert overall["qAcc"] == pytest.approx(s["metrics"]["question_acc"])


def test_wemath_file_has_its_problem_keys(run_dir):
    out, _ = run_dir
    _, data = _table(out, "wemath")
    assert {"ID", "key", "knowledge concept", "answer", "prediction"} <= set(data.columns)
    assert data["key"].str.contains("steps").all()


@pytest.mark.parametrize("bench", ["mmstar", "mathvista", "hallusionbench"])
def test_read_back(run_dir, tmp_path, bench):
    out, summaries = run_dir
    path, _ = _table(out, bench)
    s = score_file(bench, path, out_dir=tmp_path / "ours", source="smoke", smoke_n=8, progress=False)
    assert s["accuracy"] == summaries[bench]["accuracy"] and s["model"] == f"file:{path.name}"
    # a file in VLMEvalKit's own shape, without our ids: matched by row order
    theirs = tmp_path / f"Other_{path.name.split('_', 2)[-1]}"
    pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False).drop(columns=["vlmrepro_id"]).to_csv(
        theirs, sep="\t", index=False)
    s2 = score_file(bench, theirs, out_dir=tmp_path / "theirs", source="smoke", smoke_n=8, progress=False)
    assert s2["accuracy"] == summaries[bench]["accuracy"]


def test_score_file_cli(run_dir, tmp_path, capsys):
    out, summaries = run_dir
    path, _ = _table(out, "mmstar")
    assert cli_main(["score-file", "--benchmark", "mmstar", "--predictions", str(path), "--source", "smoke",
                     "--smoke-n", "8", "--out", str(tmp_path / "c")]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["accuracy"] == summaries["mmstar"]["accuracy"] and got["rule_metrics"]["accuracy"] == got["accuracy"]
    assert cli_main(["score-file", "--benchmark", "mmstar", "--predictions", str(tmp_path / "none.tsv"),
                     "--source", "smoke", "--out", str(tmp_path / "d")]) != 0
