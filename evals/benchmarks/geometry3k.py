"""Geometry3K (Lu et al., 2021; the ``hiyouga/geometry3k`` release): geometry problems with one
diagram each, asked free-form (NoisyRollout's protocol converts the options away). Checked with
math-verify. The test split is REOPOLD's / PTD-PO's Geo3K column; the validation split is VOLD's
validation set.
"""
from __future__ import annotations

from evals.benchmarks.base import Benchmark
from evals.benchmarks.common import strip_image_tokens
from evals.fixtures import make_image

ANSWERS = ["2\\sqrt{3}", "30", "\\frac{9}{2}", "12.5"]


class Geometry3K(Benchmark):
    def to_sample(self, row, idx, source, split=None):
        images = [self.image(v, source, idx, "images") for v in (row.get("images") or [])]
        return self.make_sample(f"{split}/{idx}", strip_image_tokens(row["problem"]), row["answer"],
                                images=images)

    def smoke_rows(self, n=2, seed=0):
        return [{"images": [make_image(seed * 100 + i)],
                 "problem": "<image>Find x. Round to the nearest tenth if necessary.",
                 "answer": ANSWERS[(seed + i) % len(ANSWERS)]} for i in range(n)]


_COMMON = dict(hf_id="hiyouga/geometry3k", family="math", scoring="math-verify",
               required=("images", "problem", "answer"))
BENCHMARKS = [
    Geometry3K(name="geometry3k", title="Geometry3K (test)", split="test", size=601,
               tables=("REOPOLD visual table (§5.2): Geo3K", "PTD-PO Tab.1,2,4: Geo3K"), **_COMMON),
    Geometry3K(name="geometry3k_val", title="Geometry3K (validation)", split="validation", size=300,
               tables=("VOLD: validation set (training curves)",), **_COMMON),
]
