"""harness/data: synthetic generators (determinism, answers recomputed independently) and the
training-set loaders on local rows in each real schema (same code path as the hub), bad rows."""
from __future__ import annotations

import io
import json
import math
import re
from collections import Counter, deque
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from math_verify import parse, verify
from PIL import Image

from harness.data import load_training_set, synthetic
from harness.data.prompts import BOXED, CHOICE_BOXED, STEP_BY_STEP_BOXED, format_prompt
from harness.data.training_sets import TRAINING_SETS, detect_schema
from harness.errors import DataError


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _fields(s):
    return (s.id, s.prompt, s.answer, s.response, s.choices, s.answer_type, s.hint, s.system)


# ----------------------------------------------------------------- determinism -------------

def test_same_seed_same_samples_byte_identical_images():
    a, b = synthetic.visual(16, seed=5), synthetic.visual(16, seed=5)
    assert [_fields(s) for s in a] == [_fields(s) for s in b]
    assert [_png(s.images[0]) for s in a] == [_png(s.images[0]) for s in b]
    assert [s.images[0].tobytes() for s in a] == [s.images[0].tobytes() for s in b]
    t1, t2 = synthetic.text_math(25, seed=5), synthetic.text_math(25, seed=5)
    assert [_fields(s) for s in t1] == [_fields(s) for s in t2]


def test_prefix_stable_and_seed_dependent():
    short, long = synthetic.text_math(5, seed=1), synthetic.text_math(12, seed=1)
    assert [_fields(s) for s in short] == [_fields(s) for s in long[:5]]
    other = synthetic.text_math(12, seed=2)
    assert [s.prompt for s in long] != [s.prompt for s in other]
    v1, v2 = synthetic.visual(8, seed=1), synthetic.visual(8, seed=2)
    assert [_png(s.images[0]) for s in v1] != [_png(s.images[0]) for s in v2]
    assert len({s.id for s in long}) == len(long)


# ----------------------------------------------------------------- text math ---------------

def _expected_text_answer(kind: str, p: dict) -> Fraction:
    if kind == "arithmetic":
        a, b, c = p["a"], p["b"], p["c"]
        return Fraction({"a+b*c": a + b * c, "a*b-c": a * b - c, "(a+b)*c": (a + b) * c}[p["form"]])
    if kind == "linear":
        return Fraction(p["c"] - p["b"], p["a"])
    if kind == "fraction":
        x, y = Fraction(*p["p"]), Fraction(*p["r"])
        return {"+": x + y, "-": x - y, "*": x * y}[p["op"]]
    if kind == "percentage":
        part = Fraction(p["pct"] * p["base"], 100)
        return part if p["form"] == "of" else p["base"] - part
    if p["form"] == "bags":
        return Fraction(p["a"] + p["b"] * p["c"] - p["d"])
    if p["form"] == "speed":
        return Fraction(p["v"] * p["t"])
    return Fraction(p["total"], p["k"])


def test_text_math_answers_are_correct_and_verifiable():
    samples = synthetic.text_math(30, seed=3)
    assert Counter(s.meta["kind"] for s in samples) == {k: 6 for k in synthetic.TEXT_MATH_KINDS}
    for s in samples:
        expected = _expected_text_answer(s.meta["kind"], s.meta["params"])
        assert Fraction(s.answer) == expected, s
        if s.meta["kind"] == "linear":
            p = s.meta["params"]
            assert p["a"] * int(s.answer) + p["b"] == p["c"]
        assert s.prompt.endswith(STEP_BY_STEP_BOXED) and s.meta["question"] in s.prompt
        assert s.response.rstrip(".$").endswith("}") and "\\boxed{" in s.response
        gold = parse(f"${s.answer}$")
        assert verify(gold, parse(s.response)), (s.answer, s.response)
        assert not verify(gold, parse(f"$\\boxed{{{expected + 1}}}$"))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_text_math_any_seed(seed):
    for s in synthetic.text_math(5, seed):
        assert Fraction(s.answer) == _expected_text_answer(s.meta["kind"], s.meta["params"])
        assert verify(parse(f"${s.answer}$"), parse(s.response))


# ----------------------------------------------------------------- visual ------------------

def _components(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """4-connected components of a boolean mask (plain BFS, independent of the generator)."""
    seen = np.zeros_like(mask, dtype=bool)
    comps = []
    h, w = mask.shape
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        q, comp = deque([(y0, x0)]), []
        while q:
            y, x = q.popleft()
            comp.append((y, x))
            for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                ny, nx = y + dy, x + dx
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    q.append((ny, nx))
        comps.append(comp)
    return comps


def _classify(comp) -> str:
    ys, xs = zip(*comp)
    fill = len(comp) / ((max(ys) - min(ys) + 1) * (max(xs) - min(xs) + 1))
    return "square" if fill > 0.93 else "circle" if fill > 0.66 else "triangle"


def _value(s) -> str:
    return s.choices[s.answer] if s.choices else s.answer


def test_counting_answer_recomputed_from_pixels():
    samples = synthetic.visual(24, seed=11, kinds=["count"])
    assert any(s.choices for s in samples) and any(not s.choices for s in samples)
    for s in samples:
        arr = np.asarray(s.images[0])
        comps = _components((arr != 255).any(axis=2))
        assert len(comps) == len(s.meta["shapes"])
        counted = Counter(_classify(c) for c in comps)
        assert counted == Counter(p["kind"] for p in s.meta["shapes"])
        assert _value(s) == str(counted[s.meta["target"]]) == str(s.meta["answer_value"])


def test_bar_chart_heights_and_answers():
    samples = synthetic.visual(24, seed=4, kinds=["bar_chart"])
    assert {s.meta["form"] for s in samples} == {"value", "tallest", "difference"}
    for s in samples:
        arr = np.asarray(s.images[0])
        is_bar = (arr == np.array(synthetic.BAR_COLOR)).all(axis=2)
        measured = {}
        for b in s.meta["bars"]:
            px = int(is_bar[:, b["x0"] + b["width"] // 2].sum())
            assert px % s.meta["unit"] == 0
            measured[b["label"]] = px // s.meta["unit"]
        assert measured == {b["label"]: b["value"] for b in s.meta["bars"]}
        form = s.meta["form"]
        if form == "value":
            label = re.search(r"value of bar ([A-E])\?", s.prompt).group(1)
            assert s.answer == str(measured[label])
        elif form == "tallest":
            assert s.answer == max(measured, key=measured.get) and s.choices[s.answer] == f"bar {s.answer}"
        else:
            assert s.answer == str(max(measured.values()) - min(measured.values()))


def test_triangles_answers():
    for s in synthetic.visual(60, seed=9, kinds=["triangle_hypotenuse", "triangle_angle"]):
        if s.meta["kind"] == "triangle_hypotenuse":
            a, b = s.meta["legs"]
            assert verify(parse(f"${_value(s)}$"), parse(f"${math.sqrt(a * a + b * b)}$"))
            m = re.fullmatch(r"\\sqrt\{(\d+)\}|(\d+)", _value(s))
            assert (int(m.group(1)) if m.group(1) else int(m.group(2)) ** 2) == a * a + b * b
        else:
            assert int(_value(s)) + s.meta["marked_angle"] == 90


def test_visual_prompts_images_and_choices():
    samples = synthetic.visual(40, seed=0)
    assert Counter(s.meta["kind"] for s in samples) == {k: 10 for k in synthetic.VISUAL_KINDS}
    for s in samples:
        assert len(s.images) == 1 and s.images[0].mode == "RGB"
        assert all(56 <= d <= 112 for d in s.images[0].size)
        if s.choices:
            assert s.answer_type == "multiple_choice" and s.answer in s.choices
            assert len(set(s.choices.values())) == len(s.choices) >= 3
            assert s.prompt == format_prompt(s.meta["question"], "choice", s.choices)
            assert s.prompt.endswith(CHOICE_BOXED) and all(f"({k}) {v}" in s.prompt for k, v in s.choices.items())
        else:
            assert s.prompt.endswith(BOXED)
    assert sum(bool(s.choices) for s in samples) >= 8


def test_learnable_task():
    samples = synthetic.learnable(30, seed=0)
    assert {s.answer for s in samples} == {"3"} and all("digit 3" in s.prompt for s in samples)
    assert len({s.prompt for s in samples}) > 3
    assert {s.answer for s in synthetic.learnable(5, 0, target="7")} == {"7"}
    with pytest.raises(ValueError):
        synthetic.learnable(1, 0, target="12")


def test_smoke_names_in_registry():
    train = load_training_set("smoke-visual", limit=6)
    test = load_training_set("smoke-visual", split="test", limit=6)
    assert len(train) == len(test) == 6
    assert [_png(s.images[0]) for s in train] != [_png(s.images[0]) for s in test]
    assert len(load_training_set("smoke-text-math")) == 64
    assert load_training_set("smoke-learnable", limit=4)[0].answer == "3"
    assert load_training_set("smoke-text-math", limit=2, instruction=None)[0].prompt == \
        synthetic.text_math(1, 0)[0].meta["question"]
    with pytest.raises(KeyError, match="orz-57k"):
        load_training_set("no-such-set")


# ----------------------------------------------------------------- real-schema loaders -----

def _img_bytes(color=(255, 0, 0), size=(20, 16)) -> bytes:
    return _png(Image.new("RGB", size, color))


def _write_parquet(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _orz_rows():
    return [[{"from": "human", "value": "What is $1+1$?"},
             {"from": "assistant", "ground_truth": {"value": "2", "pass_at_n": 0.5}}],
            [{"from": "human", "value": "Compute $\\frac{1}{2}+\\frac{1}{3}$."},
             {"from": "assistant", "ground_truth": {"value": "\\frac{5}{6}"}}]]


def test_orz_loader(tmp_path):
    (tmp_path / "orz_math_57k_collection.json").write_text(json.dumps(_orz_rows()))
    samples = load_training_set(tmp_path, schema="orz-57k")
    assert [s.answer for s in samples] == ["2", "\\frac{5}{6}"]
    assert samples[0].prompt == "What is $1+1$?\n" + STEP_BY_STEP_BOXED and samples[0].id == "orz-57k-0"
    # the form datasets' json loader produces ({"0": human, "1": assistant}), schema guessed
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "rows.jsonl").write_text("\n".join(json.dumps({"0": h, "1": a}) for h, a in _orz_rows()))
    assert [s.answer for s in load_training_set(tmp_path / "b", limit=1)] == ["2"]


def test_mixture_of_thoughts_loader(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "Find 2+2. Put your answer in \\boxed{}."},
                          {"role": "assistant", "content": "<think>2+2=4</think>\n\\boxed{4}"}],
             "num_tokens": 12, "source": "numina"}]
    _write_parquet(tmp_path / "math" / "train-00000-of-00001.parquet", rows)
    _write_parquet(tmp_path / "math" / "test-00000-of-00001.parquet", rows[:0] or [
        {"messages": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "x"}],
         "num_tokens": 1, "source": "t"}])
    (s,) = load_training_set(tmp_path, schema="mixture-of-thoughts")
    assert s.prompt == rows[0]["messages"][0]["content"] and s.response.endswith("\\boxed{4}")
    assert s.answer is None and s.meta["source"] == "numina" and s.meta["num_tokens"] == 12
    assert load_training_set(tmp_path, "test", schema="mixture-of-thoughts")[0].prompt == "other"


def test_geometry3k_saved_dataset(tmp_path):
    import datasets
    feats = datasets.Features({"images": datasets.List(datasets.Image()), "problem": datasets.Value("string"),
                               "answer": datasets.Value("string")})
    imgs = [Image.new("RGB", (30, 20), (0, 0, 255)), Image.new("RGB", (10, 10), (0, 255, 0))]
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"images": [[imgs[0]], [imgs[1]]],
                                             "problem": ["<image>Find x.", "<image>Find the area."],
                                             "answer": ["3", "2\\sqrt{3}"]}, features=feats),
        "test": datasets.Dataset.from_dict({"images": [[imgs[1]]], "problem": ["<image>Find y."],
                                            "answer": ["5"]}, features=feats)})
    dd.save_to_disk(str(tmp_path / "geo"))
    train = load_training_set(tmp_path / "geo", schema="geometry3k")
    assert [s.answer for s in train] == ["3", "2\\sqrt{3}"]
    assert train[0].prompt == "Find x.\n" + STEP_BY_STEP_BOXED and train[0].images[0].size == (30, 20)
    assert train[0].images[0].getpixel((0, 0)) == (0, 0, 255)
    assert load_training_set(tmp_path / "geo", "test", schema="geometry3k")[0].meta["question"] == "Find y."
    assert len(load_training_set(tmp_path / "geo", limit=1, schema="geometry3k")) == 1


def test_vision_sr1_parquet_images_as_hf_structs(tmp_path):
    rows = [{"images": [{"bytes": _img_bytes(), "path": None}], "problem": "<image>How many?", "answer": "4"}]
    _write_parquet(tmp_path / "data" / "train-00000-of-00001.parquet", rows)
    (s,) = load_training_set(tmp_path, schema="vision-sr1-47k")
    assert s.answer == "4" and s.images[0].size == (20, 16) and detect_schema(rows[0]) == "easyr1"


def test_virl39k_loader_with_relative_image_paths(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (12, 12), (9, 9, 9)).save(tmp_path / "images" / "q1.png")
    rows = [{"question": "<image>Which is larger? A. 1 B. 2", "answer": "\\boxed{B}", "category": "math",
             "source": "MM-Eureka", "qid": "q1", "image": ["images/q1.png"],
             "PassRate_32BTrained": 0.5, "PassRate_7BBase": 0.25}]
    _write_parquet(tmp_path / "39Kdata.parquet", rows)
    (s,) = load_training_set(tmp_path, schema="virl39k")
    assert s.answer == "B" and s.id == "virl39k-q1" and s.images[0].getpixel((0, 0)) == (9, 9, 9)
    assert s.meta["category"] == "math" and s.prompt.startswith("Which is larger?")


def test_mmk12_and_openr1_loaders(tmp_path):
    _write_parquet(tmp_path / "mmk12" / "train.parquet",
                   [{"id": "abc", "subject": "math", "image": {"bytes": _img_bytes(), "path": None},
                     "question": "As shown, find the angle.", "answer": "$$35^{\\circ}$$"}])
    (m,) = load_training_set(tmp_path / "mmk12", schema="mmk12")
    assert m.id == "mmk12-abc" and m.answer == "$$35^{\\circ}$$" and m.meta["subject"] == "math"
    _write_parquet(tmp_path / "openr1" / "train.parquet", [{
        "data_source": "openr1", "ability": "math",
        "prompt": [{"role": "system", "content": "Think first."}, {"role": "user", "content": "What is 3*3?"}],
        "target": [{"role": "assistant", "content": "3*3=9. \\boxed{9}"}],
        "reward_model": {"ground_truth": "9", "style": "rule"}, "extra_info": {"index": 0, "split": "train"}}])
    (o,) = load_training_set(tmp_path / "openr1", schema="openr1-math-46k")
    assert (o.prompt, o.system, o.answer, o.response) == ("What is 3*3?", "Think first.", "9", "3*3=9. \\boxed{9}")


def test_hub_path_passes_id_config_split_revision(monkeypatch, tmp_path):
    """Offline: the hub branch calls datasets / huggingface_hub with the spec's id, config, split
    and the pinned revision, then maps the rows with the same function as local files."""
    import datasets
    import huggingface_hub
    calls = []
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}

    def fake_load_dataset(path, name=None, split=None, revision=None, streaming=False):
        calls.append((path, name, split, revision))
        return [row, row, row]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    out = load_training_set("mixture-of-thoughts-math", "train", limit=2, revision="abc123")
    assert calls == [("open-r1/Mixture-of-Thoughts", "math", "train", "abc123")] and len(out) == 2
    assert out[0].response == "a"

    (tmp_path / "orz.json").write_text(json.dumps(_orz_rows()))
    downloads = []

    def fake_download(repo_id, filename, repo_type=None, revision=None):
        downloads.append((repo_id, filename, repo_type, revision))
        return str(tmp_path / "orz.json")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    orz = load_training_set("orz-57k", revision="r1")
    assert downloads == [("Open-Reasoner-Zero/orz_math_57k_collection", "orz_math_57k_collection.json",
                          "dataset", "r1")]
    assert [s.answer for s in orz] == ["2", "\\frac{5}{6}"]
    assert "Open-Reasoner-Zero/orz_math_57k_collection/orz_math_57k_collection.json" in str(
        pytest.raises(DataError, _bad_orz_via_hub, monkeypatch, tmp_path).value)


def _bad_orz_via_hub(monkeypatch, tmp_path):
    (tmp_path / "orz.json").write_text(json.dumps([[{"from": "human", "value": "q"}, {"from": "assistant"}]]))
    return load_training_set("orz-57k")


def test_every_registered_set_has_a_known_schema():
    assert {"orz-57k", "mixture-of-thoughts", "geometry3k", "vision-sr1-47k", "virl39k", "mmk12",
            "openr1-math-46k"} <= set(TRAINING_SETS)
    assert TRAINING_SETS["orz-57k"].hub_id == "Open-Reasoner-Zero/orz_math_57k_collection"


# ----------------------------------------------------------------- bad rows ----------------

def _raises(match_parts, fn):
    with pytest.raises(DataError) as e:
        fn()
    for part in match_parts:
        assert part in str(e.value), (part, str(e.value))
    return e.value


def test_missing_answer_names_file_row_field(tmp_path):
    rows = _orz_rows()
    del rows[1][1]["ground_truth"]
    f = tmp_path / "orz.json"
    f.write_text(json.dumps(rows))
    err = _raises([str(f), "row 1", "1.ground_truth.value"], lambda: load_training_set(f, schema="orz-57k"))
    assert err.row == 1 and err.field == "1.ground_truth.value"
    _write_parquet(tmp_path / "g" / "train.parquet",
                   [{"images": [{"bytes": _img_bytes(), "path": None}], "problem": "p", "answer": ""}])
    _raises(["train.parquet", "row 0", "'answer'"], lambda: load_training_set(tmp_path / "g", schema="geometry3k"))


def test_undecodable_image_names_file_row_field(tmp_path):
    ok = {"images": [{"bytes": _img_bytes(), "path": None}], "problem": "p", "answer": "1"}
    bad = {"images": [{"bytes": _img_bytes(), "path": None}, {"bytes": b"not a png", "path": None}],
           "problem": "p", "answer": "1"}
    f = _write_parquet(tmp_path / "train-0.parquet", [ok, ok, bad])
    err = _raises([str(f), "row 2", "images[1]", "does not decode"],
                  lambda: load_training_set(tmp_path, schema="geometry3k"))
    assert (err.row, err.field) == (2, "images[1]")
    _write_parquet(tmp_path / "v" / "x.parquet", [{"question": "q", "answer": "a", "image": ["missing.png"]}])
    _raises(["x.parquet", "row 0", "image[0]"], lambda: load_training_set(tmp_path / "v", schema="virl39k"))


def test_wrong_type_names_file_row_field(tmp_path):
    f = tmp_path / "rows.jsonl"
    f.write_text(json.dumps({"problem": 7, "answer": "1", "images": ["a.png"]}) + "\n")
    _raises([str(f), "row 0", "'problem'", "expected str, got int"],
            lambda: load_training_set(f, schema="geometry3k"))
    f.write_text(json.dumps({"problem": "p", "answer": ["1"], "images": ["a.png"]}) + "\n")
    _raises([str(f), "row 0", "'answer'", "got list"], lambda: load_training_set(f, schema="geometry3k"))
    f.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    _raises([str(f), "row 0", "'messages'", "no assistant turn"], lambda: load_training_set(f))
    f.write_text(json.dumps({"messages": [{"role": "user", "content": 3}]}) + "\n")
    _raises(["row 0", "'messages.0.content'"], lambda: load_training_set(f, schema="mixture-of-thoughts"))
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    f.write_text(json.dumps(good) + '\n{not json\n')
    _raises([f"{f}:2", "invalid JSON"], lambda: load_training_set(f, limit=5, schema="mot"))
    f.write_text(json.dumps({"foo": 1}) + "\n")
    _raises([str(f), "row 0", "unrecognised row schema"], lambda: load_training_set(f))


def test_missing_split_is_an_error(tmp_path):
    _write_parquet(tmp_path / "train-0.parquet", [{"problem": "p", "answer": "1", "images": []}])
    _raises([str(tmp_path), "split 'test'"], lambda: load_training_set(tmp_path, "test", schema="geometry3k"))
