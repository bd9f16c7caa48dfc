"""Session setup: the default suite builds the smoke kinds on the small offline BPE.

The default suite tests losses, resume, checkpoints and plumbing, none of which depends on the
vocabulary, and runs about ten times faster with ~1.5k-id models (``harness.tiny.SMOKE_VOCAB_ENV``).
The slow suite (``-m slow``: the smoke reproductions end to end) and every user run use the real
Qwen vocabulary; tests that need it regardless use the ``real_vocab`` fixture.
"""
from __future__ import annotations

import os

import pytest

from harness.tiny import SMOKE_VOCAB_ENV


def pytest_configure(config: pytest.Config) -> None:
    markexpr = config.getoption("markexpr", "") or ""
    if "slow" in markexpr and "not slow" not in markexpr:
        os.environ.setdefault(SMOKE_VOCAB_ENV, "qwen")
    else:
        os.environ.setdefault(SMOKE_VOCAB_ENV, "bpe")


@pytest.fixture
def real_vocab(monkeypatch: pytest.MonkeyPatch) -> None:
    """Build / use the smoke kinds on the real Qwen vocabulary (with the warm start) in this test."""
    monkeypatch.setenv(SMOKE_VOCAB_ENV, "qwen")
