"""Smoke rows draw on real held-out data (easy-vqa's test split, champ's test split) in each
benchmark's real schema, with enough items, answers that vary, every item answerable, and a
constant-answer baseline well below a model that reads the image."""
from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from PIL import Image

from harness.data.packaged import _champ_problems, _easy_vqa_rows, champ_split, crop_to_shape
from harness.types import Sample

from evals import baseline, smoke
from evals.benchmarks import REGISTRY
from tests.test_evals_support import oracle_response

ALL = sorted(REGISTRY)
VISUAL = [n for n in ALL if REGISTRY[n].kind == "vision"]
TEXT = [n for n in ALL if REGISTRY[n].kind == "text"]
N = 40


def _hash(img: Image.Image) -> str:
    return hashlib.sha1(img.convert("RGB").tobytes()).hexdigest()


@pytest.fixture(scope="module")
def split_hashes() -> dict[str, set[str]]:
    """Pixel hashes of every easy-vqa image each split's questions use (as harness.data.packaged
    splits them), cropped to the shape as every smoke image is: the test split vs train +
    validation (no cropped test image equals a cropped training one; the uncropped images are
    disjoint too: tests/test_packaged_data.py)."""
    out = {}
    for split in ("train", "validation", "test"):
        paths = {row[4] for row in _easy_vqa_rows(split)}
        hashes = set()
        for p in paths:
            with Image.open(p) as im:
                hashes.add(_hash(crop_to_shape(im)))
        out[split] = hashes
    assert not out["test"] & (out["train"] | out["validation"])
    return out


def _tiles(img: Image.Image) -> list[str]:
    """Hashes of the 64 x 64 tiles at multiples of 64 (composed smoke images keep each easy-vqa
    image whole there)."""
    return [_hash(img.crop((x, y, x + smoke.TILE, y + smoke.TILE)))
            for y in range(0, img.height - smoke.TILE + 1, smoke.TILE)
            for x in range(0, img.width - smoke.TILE + 1, smoke.TILE)]


def expected_format(bench, sample: Sample) -> str:
    """A response giving the gold answer the way the benchmark asks for it."""
    if bench.family == "braced":                       # VLMs are Blind: "{3}"
        return f"I count them. {{{sample.answer}}}"
    return oracle_response(sample)                     # \boxed{gold} (a letter for multiple choice)


@pytest.fixture(scope="module")
def loaded() -> dict[str, list[Sample]]:
    return {name: REGISTRY[name].load("smoke", smoke_n=N) for name in ALL}


@pytest.mark.parametrize("name", ALL)
def test_smoke_rows_are_many_varied_and_answerable(name, loaded):
    bench, samples = REGISTRY[name], loaded[name]
    # whole groups (MathVerse versions, WeMath problems) may round n up a little
    assert N <= len(samples) <= N + 3, len(samples)
    assert len({s.id for s in samples}) == len(samples)
    answers = Counter(s.answer for s in samples)
    assert len(answers) >= 2, answers
    for s in samples:
        res = bench.score(s, expected_format(bench, s))
        assert res["score"] == 1.0 and res["correct"], (s.id, s.answer, res)
        if bench.kind == "vision":        # (text: math-verify per item, slow; tests/test_evals_benchmarks.py)
            assert bench.score(s, "Sorry, it is unclear.")["score"] == 0.0


@pytest.mark.parametrize("name", VISUAL)
def test_visual_smoke_images_come_from_easy_vqa_test_only(name, loaded, split_hashes):
    held_in = split_hashes["train"] | split_hashes["validation"]
    for s in loaded[name]:
        assert s.images, s.id
        for img in s.images:
            tiles = _tiles(img)
            assert any(t in split_hashes["test"] for t in tiles), (s.id, img.size)
            assert not any(t in held_in for t in tiles), s.id


@pytest.mark.parametrize("name", ["mathvision", "mmstar", "mmmu_pro", "mathverse"])
def test_single_image_smoke_items_ask_the_learnable_colour(name, loaded):
    """Single-image items drawn by ``evals.smoke.items`` ask for the colour (LEARNABLE_KINDS);
    MathVista keeps shapes for its integer / float fields (test_mathvista_smoke_exercises_its_fields;
    DynaMath draws question texts of both kinds itself)."""
    assert smoke.LEARNABLE_KINDS == ("color",)
    words = [it["answer"] for it in smoke.items(name, 40, 0)]
    assert set(words) <= set(smoke.EASY_VQA_COLORS) and len(set(words)) >= 6
    gold = [s.choices[s.answer] if s.choices else s.answer for s in loaded[name]]
    assert all(g in smoke.EASY_VQA_COLORS for g in gold if g not in smoke.LETTERS), gold


@pytest.mark.parametrize("name", TEXT)
def test_text_smoke_problems_are_champ_test_problems(name, loaded):
    test_q = {p["question"] for p in _champ_problems() if champ_split(p["id"]) == "test"}
    other_q = {p["question"] for p in _champ_problems() if champ_split(p["id"]) != "test"}
    assert len(test_q) == smoke.CHAMP_TEST
    for s in loaded[name]:
        assert any(q in s.prompt for q in test_q) and not any(q in s.prompt for q in other_q), s.id
    many = REGISTRY[name].load("smoke", smoke_n=200)
    assert len(many) == smoke.CHAMP_TEST and len({s.prompt for s in many}) == smoke.CHAMP_TEST   # capped


@pytest.mark.parametrize("name", VISUAL)
def test_constant_answer_baseline_is_far_below_reading_the_image(name, loaded):
    bench, samples = REGISTRY[name], loaded[name]
    base = baseline.constant_answer_baseline(bench, samples)
    assert base["metric"] == bench.headline and base["n"] == len(samples)
    assert base["value"] < 60.0, base
    assert base["value"] == max(base["values"].values())


@pytest.mark.parametrize("name", ["mmstar", "wemath", "dynamath", "mathverse", "tallyqa", "text:math500"])
def test_seeds_draw_other_items_and_a_seed_is_deterministic(name):
    bench = REGISTRY[name.split(":")[-1]]

    def key(rows):
        return [(r.get("question") or r.get("text") or r.get("problem"), str(r.get("answer", r.get("label"))))
                for r in rows]
    a, b, c = bench.smoke_rows(12, seed=0), bench.smoke_rows(12, seed=0), bench.smoke_rows(12, seed=1)
    assert key(a) == key(b)
    assert key(a) != key(c)
    if bench.kind == "vision":
        def imgs(rows):
            out = []
            for r in rows:
                for v in r.values():
                    if isinstance(v, Image.Image):
                        out.append(_hash(v))
                    elif isinstance(v, str) and v.endswith(".png"):       # images stored as files
                        out.append(v)
            return out
        assert imgs(a) == imgs(b) and imgs(a) != imgs(c)


def test_two_hundred_visual_rows_load():
    for name in ("mmstar", "mathvista", "dynamath", "wemath", "tallyqa", "mmmu_pro"):
        samples = REGISTRY[name].load("smoke", smoke_n=200, seed=3)
        assert 200 <= len(samples) <= 203, name
        assert len({s.id for s in samples}) == len(samples)


def test_structured_schemas(loaded):
    # MathVerse: each problem in every version, one gold
    mv = defaultdict(list)
    for s in loaded["mathverse"]:
        mv[s.meta["problem_index"]].append(s)
    for group in mv.values():
        assert {s.meta["problem_version"] for s in group} == set(REGISTRY["mathverse"].versions)
        assert len({s.answer for s in group}) == 1
    # DynaMath: two variants of each seed question, same question, different images
    dm = defaultdict(list)
    for s in loaded["dynamath"]:
        dm[s.meta["qid"]].append(s)
    for group in dm.values():
        assert sorted(s.meta["variant"] for s in group) == [1, 2]
        assert len({s.prompt.split("\n")[0] for s in group}) == 1
        assert len({_hash(s.images[0]) for s in group}) == 2
    # WeMath: complete problems; score_strict is 100 for an oracle, 0 when only sub-problems are right
    bench = REGISTRY["wemath"]
    samples = loaded["wemath"]
    by = defaultdict(set)
    for s in samples:
        by[s.meta["problem"]].add(s.meta["key"])
    for keys in by.values():
        steps = int(next(iter(keys))[0])
        assert keys == {f"{steps}steps_{i}" for i in range(1, steps + 1)} | {f"{steps}steps_multi"}

    def summary(right):
        records = []
        for s in samples:
            ok = right(s)
            records.append({"score": float(ok), "correct": [ok], "meta": s.meta})
        return bench.aggregate(records)
    assert summary(lambda s: True)["score_strict"] == 100.0
    only_subs = summary(lambda s: not s.meta["key"].endswith("multi"))
    assert only_subs["score_strict"] == 50.0 and only_subs["IG"] == 100.0       # strict: N - 0.5 IG
    # HallusionBench: yes / no balanced, each question asked of two figures with opposite answers
    hb = loaded["hallusionbench"]
    assert Counter(s.answer for s in hb) == {"yes": N // 2, "no": N // 2}
    q = defaultdict(set)
    for s in hb:
        q[s.meta["question"]].add(s.answer)
    assert all(v == {"yes", "no"} for v in q.values())
    # multiple choice: each letter is the gold about equally often (no letter above 45%)
    for name in ("mmstar", "mmmu_pro_4", "visualpuzzles", "vstar"):
        counts = Counter(s.answer for s in loaded[name])
        assert max(counts.values()) <= 0.45 * len(loaded[name]), (name, counts)


def test_image_attributes_agree_with_every_easy_vqa_answer():
    attrs = smoke.attributes()
    for question, answer, image_id, kind, _ in _easy_vqa_rows("test"):
        assert attrs[image_id][kind] == answer, (question, answer, image_id)
    assert len(smoke.full_ids()) > 700
    for image_id in smoke.full_ids():
        assert set(attrs[image_id]) == {"color", "shape"}


def test_mathvista_smoke_exercises_its_fields(loaded):
    mv = loaded["mathvista"]
    kinds = {(s.meta["question_type"], s.meta["answer_type"]) for s in mv}
    assert kinds == {("multi_choice", "text"), ("free_form", "integer"), ("free_form", "float")}
    floats = [s for s in mv if s.meta["answer_type"] == "float"]
    assert all(s.meta["precision"] == 1 and "1 decimal place" in s.prompt for s in floats)
    assert all(s.meta["question_type"] == "multi_choice" for s in loaded["mathvista_mc"])


# ---------------------------------------------------------------- the baseline itself
def _mc(i: int, answer: str) -> Sample:
    return Sample(id=f"t/{i}", prompt="q", answer=answer, choices={"A": "red", "B": "blue", "C": "teal"},
                  answer_type="multiple_choice", meta={"family": "choice", "letters": ["A", "B", "C"]})


def test_constant_answer_baseline_finds_the_best_constant():
    bench = REGISTRY["mmstar"]
    samples = [_mc(i, a) for i, a in enumerate("AABBBC")]
    base = baseline.constant_answer_baseline(bench, samples)
    assert base["constant"] == "B" and base["value"] == pytest.approx(50.0)
    assert base["values"]["A"] == pytest.approx(100 / 3) and set(base["values"]) == {"A", "B", "C"}
    free = REGISTRY["geometry3k"]
    words = ["red", "red", "blue", "red"]
    samples = [Sample(id=f"g/{i}", prompt="q", answer=w) for i, w in enumerate(words)]
    base = baseline.constant_answer_baseline(free, samples)
    assert (base["constant"], base["value"]) == ("red", 75.0)
    assert baseline.candidates(samples) == ["red", "blue"]
    with pytest.raises(ValueError, match="no samples"):
        baseline.constant_answer_baseline(free, [])


def test_constant_answer_baseline_uses_the_benchmark_aggregation(loaded):
    bench = REGISTRY["wemath"]
    base = baseline.constant_answer_baseline(bench, loaded["wemath"])
    assert base["metric"] == "score_strict"
    acc = baseline.constant_answer_baseline(bench, loaded["wemath"], metric="accuracy")
    assert acc["value"] >= base["value"]              # strict score punishes lucky composites
    with pytest.raises(KeyError, match="no metric"):
        baseline.constant_answer_baseline(bench, loaded["wemath"], metric="nope")


def test_memo_keys_cover_every_meta_field_the_scorers_read():
    text = (Path(__file__).parent.parent / "evals" / "scoring.py").read_text()
    read = set(re.findall(r"meta\.get\(\"(\w+)\"", text)) | {"family"}
    assert read <= set(baseline.SCORING_META), read - set(baseline.SCORING_META)


def test_cli_takes_the_smoke_row_count():
    from evals.cli import _parser
    args = _parser().parse_args(["run", "--model", "m", "--benchmarks", "mmstar", "--source", "smoke",
                                 "--smoke-n", "60"])
    assert args.smoke_n == 60


def test_smoke_image_files_are_written_once_into_the_cache(tmp_path, monkeypatch):
    """Benchmarks whose schema stores image paths (V*, TallyQA, Pixel-Reasoner) write their smoke
    images into one content-named cache directory, reused by later loads: no directory per load."""
    import tempfile

    monkeypatch.setenv("VLMREPRO_CACHE", str(tmp_path / "cache"))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    bench = REGISTRY["vstar"]
    first = bench.load("smoke", smoke_n=6, seed=0)
    second = bench.load("smoke", smoke_n=6, seed=0)
    assert [s.images[0].tobytes() for s in first] == [s.images[0].tobytes() for s in second]
    assert list(scratch.iterdir()) == []
    assert len(list((tmp_path / "cache" / "smoke-images").iterdir())) == 1
    bench.load("smoke", smoke_n=6, seed=1)
    img_dirs = list((tmp_path / "cache" / "smoke-images").iterdir())
    assert len(img_dirs) == 2 and not any(d.name.startswith(".") for d in img_dirs)
