"""Evaluation on the benchmarks the four papers report.

``evals.run(model, benchmarks, out_dir=..., ...)`` mirrors ``evals run``; ``evals.REGISTRY`` holds
the benchmarks (``evals list``). See evals/README.md.
"""
from __future__ import annotations

from typing import Any


def run(*args: Any, **kwargs: Any) -> dict[str, dict]:
    """See :func:`evals.runner.run`."""
    from evals.runner import run as _run

    return _run(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name in ("REGISTRY", "GROUPS", "get_benchmark", "group_average"):
        import evals.benchmarks as b
        return getattr(b, name)
    raise AttributeError(name)
