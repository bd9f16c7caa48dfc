"""How every CLI (``reproduce``, ``evals``, the method trainers) reports a mistake: one line on
stderr naming the file / row / field / id, exit code 2. Anything else is a bug and keeps its
traceback.

User mistakes are :data:`harness.errors.USER_ERRORS` (bad config, bad data row, unknown name,
a run that cannot go on: no space left, unusable checkpoints), a path that is not what it must be
(``--out`` naming a file, a directory given for a file, no permission), a full device, and an
unreachable model / dataset hub.
"""
from __future__ import annotations

import errno
import sys
from typing import Callable

from harness.errors import USER_ERRORS

__all__ = ["EXIT_USER_ERROR", "user_error_message", "run_reporting_errors"]

EXIT_USER_ERROR = 2

_PATH_ERRORS = (NotADirectoryError, IsADirectoryError, FileExistsError, PermissionError)
# huggingface_hub / transformers / datasets errors meaning "cannot reach or find it on the hub"
_HUB_ERROR_NAMES = {"OfflineModeIsEnabled", "LocalEntryNotFoundError", "RepositoryNotFoundError",
                    "GatedRepoError", "RevisionNotFoundError", "DatasetNotFoundError", "HfHubHTTPError"}
_HUB_PHRASES = ("couldn't connect to 'https://huggingface.co'", "couldn't reach", "huggingface.co",
                "offline mode")


def _chain(exc: BaseException):
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message of a user mistake, or None when ``exc`` looks like a bug."""
    if isinstance(exc, USER_ERRORS):
        return " ".join(str(exc).split("\n"))
    if isinstance(exc, _PATH_ERRORS) and exc.filename:
        return f"{exc.filename}: {exc.strerror or type(exc).__name__}"
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f"{e.filename}: " if e.filename else ""
            return f"{where}no space left on device"
    for e in _chain(exc):
        name = type(e).__name__
        text = str(e).lower()
        if name in _HUB_ERROR_NAMES or isinstance(e, ConnectionError) or (
                isinstance(e, OSError) and any(p in text for p in _HUB_PHRASES)):
            return f"cannot reach the model / dataset hub: {_first_line(exc)}"
    return None


def run_reporting_errors(prog: str, fn: Callable[[], int]) -> int:
    """``fn()``; a user mistake is printed as ``<prog>: error: <one line>`` and returns 2."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is a user mistake
        msg = user_error_message(exc)
        if msg is None:
            raise
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR
