"""harness.jsonl: strict reading (file:line on a bad line), a torn last line dropped only in the
lenient mode, a torn middle line an error in both, the append/read round trip and the repair."""
from __future__ import annotations

import json

import pytest

from harness.errors import DataError
from harness.jsonl import append_jsonl, iter_jsonl, read_jsonl, repair_torn_tail

GOOD = [{"step": 1, "loss": 0.5}, {"step": 2, "text": "é ∑ \\boxed{3}"}, {"step": 3}]


def _write(path, records, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail, encoding="utf-8")
    return path


def test_round_trip_with_append(tmp_path):
    path = tmp_path / "m.jsonl"
    for rec in GOOD:
        append_jsonl(path, rec)
    append_jsonl(path, {"x": float("1.5")}, fsync=True)
    assert read_jsonl(path) == [*GOOD, {"x": 1.5}]
    assert read_jsonl(path, torn_tail=True) == read_jsonl(path) == list(iter_jsonl(path))
    assert path.read_text(encoding="utf-8").count("\n") == 4
    with pytest.raises(ValueError, match="single line"):
        append_jsonl(path, {"a": 1}, indent=1)


def test_strict_reader_names_file_and_line(tmp_path):
    path = _write(tmp_path / "d.jsonl", GOOD, tail='{"step": 4, "lo')
    with pytest.raises(DataError) as e:
        read_jsonl(path)
    assert f"{path}:4" in str(e.value) and "invalid JSON" in str(e.value) and e.value.line == 4
    path.write_text('{"a": 1}\n\n[1, 2]\n')  # blank lines count in the line number; not an object
    with pytest.raises(DataError, match=r"d\.jsonl:3: expected a JSON object"):
        read_jsonl(path)
    path.write_bytes(b'{"a": 1}\n{"b": "\xff"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: not UTF-8"):
        read_jsonl(path)


def test_torn_last_line_is_dropped_only_when_lenient(tmp_path):
    path = _write(tmp_path / "m.jsonl", GOOD, tail='{"step": 4, "lo')
    assert read_jsonl(path, torn_tail=True) == GOOD
    path.write_text(path.read_text() + "\n\n")  # trailing blank lines do not make it a middle line
    assert read_jsonl(path, torn_tail=True) == GOOD
    with pytest.raises(DataError):
        read_jsonl(path)


def test_torn_middle_line_raises_even_when_lenient(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(GOOD[0]) + '\n{"step": 2, "lo\n' + json.dumps(GOOD[2]) + "\n")
    for torn_tail in (False, True):
        with pytest.raises(DataError, match=r"m\.jsonl:2: invalid JSON"):
            read_jsonl(path, torn_tail=torn_tail)
    # the records before the bad line are yielded before the error
    it = iter_jsonl(path, torn_tail=True)
    assert next(it) == GOOD[0]
    with pytest.raises(DataError):
        next(it)


def test_missing_file(tmp_path):
    assert read_jsonl(tmp_path / "none.jsonl", missing_ok=True) == []
    with pytest.raises(FileNotFoundError):
        read_jsonl(tmp_path / "none.jsonl")


def test_repair_then_append_keeps_the_file_strictly_readable(tmp_path):
    path = _write(tmp_path / "r.jsonl", GOOD, tail='{"step": 4, "lo')
    assert repair_torn_tail(path) and read_jsonl(path) == GOOD
    append_jsonl(path, {"step": 4})
    assert read_jsonl(path) == [*GOOD, {"step": 4}]
    # a complete record that only lacks its newline is kept
    path.write_text(json.dumps(GOOD[0]) + "\n" + json.dumps(GOOD[1]))
    assert repair_torn_tail(path) and read_jsonl(path) == GOOD[:2]
    assert not repair_torn_tail(path) and not repair_torn_tail(tmp_path / "none.jsonl")
    path.write_text('{"only": "torn')
    assert repair_torn_tail(path) and path.read_text() == ""


def test_rows_that_are_not_objects_when_allowed(tmp_path):
    path = tmp_path / "orz.jsonl"
    path.write_text('[{"from": "human"}, {"from": "assistant"}]\n')
    assert read_jsonl(path, objects=False) == [[{"from": "human"}, {"from": "assistant"}]]
    with pytest.raises(DataError, match="expected a JSON object"):
        read_jsonl(path)
