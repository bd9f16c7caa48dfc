"""Test doubles for the evals tests: rollout engines that answer from a rule, not a model."""
from __future__ import annotations

from typing import Callable

import torch

from harness.types import Sample, SamplingParams, Trajectories


def oracle_response(sample: Sample) -> str:
    """A response whose final answer is the gold answer (in \\boxed{})."""
    return f"Let me think. The answer is \\boxed{{{sample.answer}}}."


class FakeEngine:
    """A RolloutEngine whose responses are ``respond(sample, draw_index)``; counts its calls."""

    def __init__(self, respond: Callable[[Sample, int], str] = lambda s, j: oracle_response(s),
                 fail_after: int | None = None):
        self.respond, self.fail_after = respond, fail_after
        self.calls = 0
        self.generated = 0

    def generate(self, samples: list[Sample], sampling: SamplingParams) -> Trajectories:
        if self.fail_after is not None and self.generated >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls += 1
        self.generated += len(samples)
        n = sampling.n
        texts = [self.respond(s, j) for s in samples for j in range(n)]
        b = len(texts)
        z = torch.zeros(b, 1, dtype=torch.long)
        return Trajectories(samples=samples, prompt_ids=z, prompt_mask=torch.ones_like(z), response_ids=z,
                            response_mask=torch.ones_like(z), old_logp=torch.zeros(b, 1),
                            group_ids=torch.arange(len(samples)).repeat_interleave(n), texts=texts)

    def sync_weights(self, model: object) -> None:
        pass
