"""PixelReasoner-RL-Data: the training loader (REOPOLD tool use) and the evaluation hold-out
(``pixel_reasoner`` benchmark) are disjoint, cover every image row, and read the release schema."""
from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from PIL import Image

from harness.data import pixel_reasoner as pr
from harness.data.registry import load_training_set
from harness.errors import DataError
from evals.benchmarks import REGISTRY

N_IMAGE, N_VIDEO = 117, 9


def _rows(root: Path) -> list[dict]:
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(N_IMAGE + N_VIDEO):
        video = i % 14 == 5 and sum(r["is_video"] for r in rows) < N_VIDEO
        rel = f"images/q{i}.png"
        if not video:
            Image.new("RGB", (8, 8), (i % 256, 0, 0)).save(root / rel)
        rows.append({"qid": f"q{i}", "question": f"What is item {i}?", "image": [rel], "is_video": video,
                     "answer": [f"a{i}", f"alt{i}"]})
    assert sum(r["is_video"] for r in rows) == N_VIDEO
    return rows


@pytest.fixture()
def local_set(tmp_path):
    rows = _rows(tmp_path)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path, rows


def test_train_and_held_out_split_partition_the_image_rows(local_set):
    root, rows = local_set
    train = load_training_set(root, schema="pixelreasoner-rl")
    test = load_training_set(root, "test", schema="pixelreasoner-rl")
    ids = lambda ss: {s.meta["qid"] for s in ss}  # noqa: E731
    assert len(test) == pr.HELD_OUT and len(train) == N_IMAGE - pr.HELD_OUT
    assert ids(train).isdisjoint(ids(test))
    assert ids(train) | ids(test) == {r["qid"] for r in rows if not r["is_video"]}
    s = train[0]
    i = int(s.meta["qid"][1:])
    assert s.answer == f"a{i}" and s.meta["answers"] == [f"a{i}", f"alt{i}"]
    assert s.images[0].getpixel((0, 0)) == (i % 256, 0, 0)
    assert "crop_image" in s.system and s.prompt.startswith(f"What is item {i}?")


def test_held_out_is_verltools_train_test_split(local_set):
    _, rows = local_set
    image_rows = [r for r in rows if not r["is_video"]]
    ref = datasets.Dataset.from_list(image_rows).train_test_split(test_size=100, seed=42)
    assert [r["qid"] for _, r in pr.select_split(rows, "test")] == ref["test"]["qid"]
    assert [r["qid"] for _, r in pr.select_split(rows, "train")] == ref["train"]["qid"]


def test_hub_paths_of_trainer_and_benchmark_are_disjoint(local_set, monkeypatch):
    """Both hub code paths (datasets.load_dataset + images.zip root) over the same release rows."""
    root, rows = local_set
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_list(rows))
    monkeypatch.setattr(pr, "images_root", lambda *a, **k: root)
    import evals.benchmarks.pixel_reasoner as bench_mod
    monkeypatch.setattr(bench_mod, "images_root", lambda *a, **k: root)
    train = load_training_set("TIGER-Lab/PixelReasoner-RL-Data")
    held = REGISTRY["pixel_reasoner"].load("hub")
    assert len(held) == pr.HELD_OUT and len(train) == N_IMAGE - pr.HELD_OUT
    held_q = {s.meta["answers"][0] for s in held}  # gold a<i> names the row
    train_q = {s.meta["answers"][0] for s in train}
    assert len(held_q) == pr.HELD_OUT and held_q.isdisjoint(train_q)
    assert held_q | train_q == {r["answer"][0] for r in rows if not r["is_video"]}


@pytest.mark.parametrize("field,value,match", [
    ("answer", [], "answer"), ("image", [], "image"), ("question", "", "question"),
    ("image", ["images/missing.png"], "image"),
])
def test_bad_rows_name_file_row_and_field(local_set, field, value, match):
    root, rows = local_set
    target = next(i for i, _ in pr.select_split(rows, "train"))
    rows[target][field] = value
    bad = root / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=match) as e:
        load_training_set(bad, schema="pixelreasoner-rl")
    assert "bad.jsonl" in str(e.value) and str(target) in str(e.value)


def test_schema_is_detected_from_the_row_keys(local_set):
    root, _ = local_set
    assert len(load_training_set(root / "train.jsonl")) == N_IMAGE - pr.HELD_OUT
