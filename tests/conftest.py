"""Session setup: the tests build the smoke kinds on the small offline BPE.

The tests check losses, resume, checkpoints and plumbing, none of which depends on the
vocabulary, and run about ten times faster with ~1.5k-id models (``harness.tiny.SMOKE_VOCAB_ENV``;
set ``VLMREPRO_SMOKE_VOCAB=qwen`` to run them on the real vocabulary). Every user run, and the
committed smoke reports, use the real Qwen vocabulary; tests that need it use the ``real_vocab``
fixture (the real tokenizer's ids, the warm start of a cold real-vocabulary build).
"""
from __future__ import annotations

import os

import pytest

from harness.tiny import SMOKE_VOCAB_ENV


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault(SMOKE_VOCAB_ENV, "bpe")


@pytest.fixture
def real_vocab(monkeypatch: pytest.MonkeyPatch) -> None:
    """Build / use the smoke kinds on the real Qwen vocabulary (with the warm start) in this test."""
    monkeypatch.setenv(SMOKE_VOCAB_ENV, "qwen")
