"""Validation on an evals benchmark during training: the validator factory that composition roots
(the reproduce pipeline, a method's CLI through the ``vlmrepro.validators`` entry point) hand to
a trainer (``harness.validation``).

The student answers the validation set *with its images* (greedy, the benchmark's own prompt and
scoring) and the accuracy is in percent; VOLD tracks Geo3K this way (§4.1, Fig. 3). Under data
parallelism each rank answers its share and the counts are summed.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.types import SamplingParams
from harness.update import reduce_floats

from evals.benchmarks import get_benchmark

if TYPE_CHECKING:
    from harness.trainer import Context
    from harness.validation import MakeValidator

__all__ = ["BenchmarkValidator", "benchmark_validator"]


class BenchmarkValidator:
    """Greedy accuracy (percent) of the current policy on ``cfg.val_benchmark``: reads
    ``val_benchmark``, ``val_source``, ``val_limit``, ``val_smoke_n``, ``val_max_new_tokens`` and
    ``val_batch_size`` from ``cfg``."""

    def __init__(self, cfg: Any, ctx: "Context"):
        from harness.rollout.hf import HFRolloutEngine

        self.cfg, self.ctx = cfg, ctx
        self.bench = get_benchmark(cfg.val_benchmark)
        samples = self.bench.load(cfg.val_source, cfg.val_limit, smoke_n=cfg.val_smoke_n)
        rank, world = ctx.strategy.rank, ctx.strategy.world_size
        self.samples = samples[rank::world]
        self.total = len(samples)
        self.engine = HFRolloutEngine(ctx.policy, batch_size=cfg.val_batch_size, progress=False)

    def __call__(self) -> float:
        model = self.ctx.policy.model
        was_training = model.training
        model.eval()
        correct = 0.0
        if self.samples:
            traj = self.engine.generate(self.samples, SamplingParams(n=1, temperature=0.0,
                                                                     max_new_tokens=self.cfg.val_max_new_tokens,
                                                                     logprobs=False))
            correct = sum(self.bench.score(s, text)["score"] for s, text in zip(self.samples, traj.texts))
        if was_training:
            model.train()
        hits = reduce_floats(self.ctx.strategy, [float(correct)], "sum")[0]
        return 100.0 * hits / max(self.total, 1)


def benchmark_validator(cfg: Any) -> "MakeValidator":
    """``harness.validation.ValidatorFactory``: ``ctx -> BenchmarkValidator(cfg, ctx)``. The
    benchmark name is checked now, so a typo fails before training starts."""
    get_benchmark(cfg.val_benchmark)

    def make(ctx: "Context") -> BenchmarkValidator:
        return BenchmarkValidator(cfg, ctx)

    return make
