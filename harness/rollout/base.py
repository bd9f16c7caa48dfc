"""The ``RolloutEngine`` protocol every generator (transformers, vLLM) implements."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from harness.types import Sample, SamplingParams, Trajectories


@runtime_checkable
class RolloutEngine(Protocol):
    """Generates ``sampling.n`` responses per sample and returns them as ``Trajectories``.

    Rows are grouped by sample (``group_ids``); ``old_logp`` are the sampling policy's per-token
    log-probabilities of the generated tokens, computed at temperature 1 over the *unmodified*
    distribution (what the trainer's importance ratio needs).
    """

    def generate(self, samples: list[Sample], sampling: SamplingParams) -> Trajectories: ...

    def sync_weights(self, model: object) -> None:
        """Make the engine sample from ``model``'s current weights (no-op when it shares them)."""
        ...
