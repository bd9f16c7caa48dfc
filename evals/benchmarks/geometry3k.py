"""Geometry3K (Lu et al., 2021; the ``hiyouga/geometry3k`` release): geometry problems with one
diagram each, asked free-form (NoisyRollout's protocol converts the options away). Checked with
math-verify. The test split is REOPOLD's / PTD-PO's Geo3K column; the validation split is VOLD's
validation set.
Smoke items: easy-vqa test colour / shape questions, free form (the word) (evals/smoke.py).
"""
from __future__ import annotations

from evals import smoke
from evals.benchmarks.base import Benchmark
from evals.benchmarks.common import strip_image_tokens


class Geometry3K(Benchmark):
    def to_sample(self, row, idx, source, split=None):
        images = [self.image(v, source, idx, "images") for v in (row.get("images") or [])]
        return self.make_sample(f"{split}/{idx}", strip_image_tokens(row["problem"]), row["answer"],
                                images=images)

    def smoke_rows(self, n=2, seed=0):
        return [{"images": [it["image"]], "problem": f"<image>{it['question']}", "answer": it["answer"]}
                for it in smoke.items(self.name, n, seed)]


_COMMON = dict(hf_id="hiyouga/geometry3k", family="math", scoring="math-verify",
               required=("images", "problem", "answer"))
BENCHMARKS = [
    Geometry3K(name="geometry3k", title="Geometry3K (test)", split="test", size=601,
               tables=("REOPOLD visual table (§5.2): Geo3K", "PTD-PO Tab.1,2,4: Geo3K"), **_COMMON),
    Geometry3K(name="geometry3k_val", title="Geometry3K (validation)", split="validation", size=300,
               tables=("VOLD: validation set (training curves)",), **_COMMON),
]
