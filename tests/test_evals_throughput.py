"""Evaluation throughput paths of evals.runner: length-sorted batches (same results as unsorted),
records written per sample and synced per batch (a torn last record regenerated on resume,
nothing finished lost), a batch scored concurrently on the verifier pool (same records)."""
from __future__ import annotations

import json

import pytest

import evals
import harness.jsonl
from evals.benchmarks import get_benchmark
from evals.runner import _Scorer, batches, prompt_size, read_records
from harness.rewards import verifier_workers
from tests.test_evals_support import FakeEngine, oracle_response


def _without_time(records: list[dict]) -> dict[str, dict]:
    return {r["id"]: {k: v for k, v in r.items() if k != "time_s"} for r in records}


def test_batches_are_sorted_by_prompt_size_stably_and_cover_every_sample():
    samples = get_benchmark("mathverse").load("smoke", None, smoke_n=5)
    got = batches(samples, 3)
    flat = [s for b in got for s in b]
    assert [len(b) for b in got] == [3] * (len(samples) // 3) + ([len(samples) % 3] if len(samples) % 3 else [])
    assert sorted(s.id for s in flat) == sorted(s.id for s in samples)
    sizes = [prompt_size(s) for s in flat]
    assert sizes == sorted(sizes) and len(set(sizes)) > 1
    ties = [s.id for s in flat if prompt_size(s) == sizes[0]]
    assert ties == [s.id for s in samples if prompt_size(s) == sizes[0]]  # stable
    assert [s.id for b in batches(samples, 3, sort_by_length=False) for s in b] == [s.id for s in samples]
    with pytest.raises(ValueError, match="batch_size"):
        batches(samples, 0)


def test_records_synced_per_batch_and_a_torn_last_record_is_regenerated(tmp_path, monkeypatch):
    syncs = []
    real_sync = harness.jsonl.JsonlAppender.sync
    monkeypatch.setattr(harness.jsonl.JsonlAppender, "sync", lambda self: (syncs.append(1), real_sync(self)))
    crashing = FakeEngine(fail_after=8)
    with pytest.raises(RuntimeError, match="simulated crash"):
        evals.run("fake", "mmstar", out_dir=tmp_path, engine=crashing, source="smoke", smoke_n=10, batch_size=4,
                  progress=False)
    assert len(syncs) == 2                      # two finished batches, one sync each (not one per record)
    path = tmp_path / "mmstar" / "records.jsonl"
    finished = read_records(path)
    assert len(finished) == 8
    data = path.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[:last + (len(data) - last) // 2])        # the last record cut mid-line
    fresh = FakeEngine()
    s = evals.run("fake", "mmstar", out_dir=tmp_path, engine=fresh, source="smoke", smoke_n=10, batch_size=4,
                  progress=False)["mmstar"]
    assert fresh.generated == 10 - 7 and s["n"] == 10 and s["accuracy"] == 100.0
    records = read_records(path)
    assert len({r["id"] for r in records}) == len(records) == 10
    assert {r["id"] for r in finished[:7]} <= {r["id"] for r in records}


def test_length_sorted_greedy_run_equals_the_unsorted_run(tmp_path):
    from harness.models import load_model, smoke_model_path
    from harness.rollout.hf import HFRolloutEngine

    bundle = load_model(smoke_model_path("qwen2_5_vl"), trainable=False)
    samples = get_benchmark("mathverse").load("smoke", None, smoke_n=5)
    assert [s.id for b in batches(samples, 3) for s in b] != [s.id for s in samples]  # sorting reorders
    out = {}
    for sort in (False, True):
        d = tmp_path / str(sort)
        summary = evals.run(bundle.path, "mathverse", out_dir=d, engine=HFRolloutEngine(bundle, batch_size=3),
                            source="smoke", smoke_n=5, batch_size=3, max_new_tokens=8, progress=False,
                            sort_by_length=sort)["mathverse"]
        preds = sorted((d / "mathverse" / "vlmeval").iterdir())
        out[sort] = (summary, _without_time(read_records(d / "mathverse" / "records.jsonl")),
                     [p.read_bytes() for p in preds])
    assert out[True][0] == out[False][0]
    assert out[True][1] == out[False][1] and len(out[True][1]) == len(samples)
    assert out[True][2] == out[False][2]


def test_batch_scored_on_the_verifier_pool_equals_scoring_one_by_one():
    bench = get_benchmark("geometry3k")
    samples = bench.load("smoke", None, smoke_n=6)
    # gold forms, forms only math-verify decides, wrong answers and no answer at all
    forms = [oracle_response, lambda s: f"so \\boxed{{{s.answer} + 0}}", lambda s: "\\boxed{7/3}",
             lambda s: "I cannot tell."]
    jobs = [(s, [forms[i % len(forms)](s)]) for i, s in enumerate(samples)]
    with _Scorer(bench) as pooled:
        assert (pooled.pool is not None) == (verifier_workers() > 1)
        concurrent = list(pooled.score(jobs))
    with _Scorer(bench) as one_by_one:
        one_by_one.pool = None
        sequential = list(one_by_one.score(jobs))
    assert json.dumps(concurrent, sort_keys=True) == json.dumps(sequential, sort_keys=True)
    assert [r["id"] for r in concurrent] == [s.id for s in samples]
    assert any(r["correct"] == [True] for r in concurrent) and any(r["correct"] == [False] for r in concurrent)
