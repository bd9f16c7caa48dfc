"""The toy replication's held-out split and visual set (bench/vold_toy.py): held-out facts are
disjoint from every training prompt by construction, and the visual set's answer needs the image."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy():
    spec = importlib.util.spec_from_file_location("vold_toy", ROOT / "bench" / "vold_toy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_held_out_facts_never_appear_in_training(toy, tmp_path):
    train_facts, held = toy.split_facts()
    assert set(train_facts).isdisjoint(held) and len(train_facts) + len(held) == len(toy.FACTS) == 100
    assert 10 <= len(held) <= 30
    sets = toy.write_sets(tmp_path)
    assert set(sets["train"]) <= set(train_facts) and set(sets["held"]) == set(held)
    # the files the trainers read hold no held-out question
    held_questions = {toy.question(a, b) for a, b in held}
    sft_rows = [json.loads(line) for line in (sets["teacher_sft"] / "train.jsonl").read_text().splitlines()]
    rl_rows = [json.loads(line) for line in (sets["rl"] / "train.jsonl").read_text().splitlines()]
    seen = {r["messages"][0]["content"].split("\n")[0] for r in sft_rows} | {r[0]["value"] for r in rl_rows}
    assert seen and seen.isdisjoint(held_questions)


def test_visual_set_answer_needs_the_image(toy):
    _, held = toy.split_facts()
    visual = toy.held_samples(held, "visual")
    assert len({s.prompt for s in visual}) == 1          # one question text for every item ...
    assert len({s.answer for s in visual}) > 5           # ... with many different answers
    assert all(len(s.images) == 1 for s in visual)
    # the best the text alone can do is the most common answer
    most_common = max(sum(s.answer == a for s in visual) for a in {s.answer for s in visual})
    assert most_common / len(visual) < 0.3
    text = toy.held_samples(held, "text")
    assert all(not s.images for s in text) and len({s.prompt for s in text}) == len(held)
