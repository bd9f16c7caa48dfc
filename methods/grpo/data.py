"""Training prompts for online methods, validated before any run directory is created."""
from __future__ import annotations

from harness.errors import DataError
from harness.train_config import TrainConfig
from harness.types import Sample


def load_rows(cfg: TrainConfig) -> list[Sample]:
    """``cfg.data`` through harness.data.load_training_set (names or local paths).

    Errors in the data (a missing field, an image that does not decode) surface as DataError
    naming the file / row / field."""
    from harness.data import load_training_set

    return load_training_set(cfg.data, split=cfg.data_split, limit=cfg.data_limit)


def require(rows: list[Sample], field: str, source: str, why: str) -> list[Sample]:
    """Every row must have a non-empty ``field``; else DataError naming the row."""
    if not rows:
        raise DataError(source, None, None, "no rows")
    for i, s in enumerate(rows):
        if not getattr(s, "prompt", None):
            raise DataError(source, i, "prompt", f"empty prompt (id {s.id!r})")
        value = getattr(s, field)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(source, i, field, f"missing (id {s.id!r}); {why}")
    return rows


def load_prompts(cfg: TrainConfig) -> list[Sample]:
    """Prompts with a gold answer (the reward compares against it)."""
    return require(load_rows(cfg), "answer", cfg.data, "the reward needs a gold answer")
