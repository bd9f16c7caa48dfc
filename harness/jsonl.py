"""JSON Lines: one strict reader and one appender for every ``.jsonl`` file the project reads or writes.

Reading is strict: a line that is not a JSON object raises ``harness.errors.DataError`` naming the
file and its (1-based) line number. Files that are appended to while a run is going
(``metrics.jsonl``, evaluation records, trace parts) can end in a line cut off by a crash
mid-write; readers of those pass ``torn_tail=True``, which drops an invalid *last* line silently.
An invalid line anywhere else is corruption, not a crash, and raises in both modes. Blank lines
are skipped.

Writing: ``append_jsonl`` writes one record as one line and flushes it (``fsync=True`` also asks
the OS to put it on disk); ``JsonlAppender`` keeps the file open for a stream of records and syncs
when told (per batch). Before appending to a file a crash may have cut, call
``repair_torn_tail`` so that the torn line does not end up in the middle of the file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from harness.errors import DataError

__all__ = ["JsonlAppender", "append_jsonl", "iter_jsonl", "read_jsonl", "repair_torn_tail"]


def _parse(path: Path, lineno: int, raw: bytes, objects: bool) -> Any:
    try:
        rec = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DataError(str(path), None, None, f"not UTF-8 ({e.reason})", line=lineno) from e
    except json.JSONDecodeError as e:
        raise DataError(str(path), None, None, f"invalid JSON ({e.msg} at column {e.colno})", line=lineno) from e
    if objects and not isinstance(rec, dict):
        raise DataError(str(path), None, None, f"expected a JSON object per line, got {type(rec).__name__}",
                        line=lineno)
    return rec


def iter_jsonl(path: str | Path, *, torn_tail: bool = False, objects: bool = True) -> Iterator[Any]:
    """The records of ``path`` in order (see the module docstring for ``torn_tail``). A record
    must be a JSON object unless ``objects=False`` (e.g. data sets whose rows are lists).

    A bad line is held back until the next non-blank line shows it was not the last one, so with
    ``torn_tail=True`` records before a torn tail are still yielded one by one."""
    path = Path(path)
    pending: DataError | None = None
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            if pending is not None:  # the bad line was not the last one
                raise pending
            try:
                rec = _parse(path, lineno, line, objects)
            except DataError as e:
                if not torn_tail:
                    raise
                pending = e
                continue
            yield rec
    # pending here: the last line is torn, dropped (torn_tail=True only)


def read_jsonl(path: str | Path, *, torn_tail: bool = False, missing_ok: bool = False,
               objects: bool = True) -> list[Any]:
    """All records of ``path``. ``missing_ok``: a file that does not exist reads as no records
    (otherwise ``FileNotFoundError``)."""
    if missing_ok and not Path(path).is_file():
        return []
    return list(iter_jsonl(path, torn_tail=torn_tail, objects=objects))


def _line(record: dict[str, Any], dumps_kw: dict[str, Any]) -> str:
    dumps_kw.setdefault("ensure_ascii", False)
    line = json.dumps(record, **dumps_kw)
    if "\n" in line:  # only possible with an ``indent``: it would not be one line
        raise ValueError("append_jsonl: the record must serialise to a single line (no indent)")
    return line + "\n"


def append_jsonl(path: str | Path, record: dict[str, Any], *, fsync: bool = False, **dumps_kw: Any) -> None:
    """Append ``record`` as one line (``json.dumps(record, **dumps_kw)``), flushed; ``fsync``
    also forces it to disk. The file is created when missing (its directory must exist)."""
    with JsonlAppender(path) as f:
        f.append(record, **dumps_kw)
        if fsync:
            f.sync()


class JsonlAppender:
    """``path`` held open for many appends: ``append`` writes one record as one line and flushes
    it (a killed process loses at most the line being written), ``sync`` asks the OS to put what
    was written on disk (once per batch rather than per record). The file is created when missing."""

    def __init__(self, path: str | Path) -> None:
        self._file = open(path, "a", encoding="utf-8")

    def append(self, record: dict[str, Any], **dumps_kw: Any) -> None:
        self._file.write(_line(record, dumps_kw))
        self._file.flush()

    def sync(self) -> None:
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def repair_torn_tail(path: str | Path) -> bool:
    """Make ``path`` end at a line boundary before appending to it: a last line without its newline
    is completed when it is a valid record and cut off otherwise (a crash mid-write). Returns
    True when the file was changed; a missing or empty file is left alone."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return False
        cut = data.rfind(b"\n") + 1  # 0 when the whole file is one unterminated line
        tail = data[cut:]
        try:
            complete = isinstance(json.loads(tail.decode("utf-8")), dict)
        except (UnicodeDecodeError, json.JSONDecodeError):
            complete = False
        if complete:
            f.write(b"\n")
        else:
            f.truncate(cut)
    return True
