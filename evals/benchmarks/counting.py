"""Counting (PTD-PO's "Counting" column, PAPO's suite): the test split of
``BUAADreamer/clevr_count_70k`` — "How many items are there in the image?" on CLEVR renders.
Scored as an exact integer.
Smoke items: 2 x 2 grids with 1-4 easy-vqa test images (blank cells white); gold: how many
(evals/smoke.py).
"""
from __future__ import annotations

from evals import smoke
from evals.benchmarks.base import Benchmark
from evals.benchmarks.common import strip_image_tokens


class Counting(Benchmark):
    def to_sample(self, row, idx, source, split=None):
        images = [self.image(v, source, idx, "images") for v in (row.get("images") or [])]
        return self.make_sample(str(idx), strip_image_tokens(row["problem"]), str(row["answer"]).strip(),
                                images=images, answer_type="integer")

    def smoke_rows(self, n=2, seed=0):
        rows = []
        for i in range(n):
            cells, count, _ = smoke.count_scene(f"{self.name}/{seed}/{i}")
            rows.append({"images": [smoke.grid(cells)], "problem": "<image>How many items are there in the image?",
                         "answer": str(count)})
        return rows


BENCHMARKS = [Counting(
    name="counting", title="CLEVR counting (PAPO)", hf_id="BUAADreamer/clevr_count_70k", split="test",
    size=200, tables=("PTD-PO Tab.1,2,4: Counting",), family="numeric", scoring="exact integer",
    required=("images", "problem", "answer"), sampling={"temperature": 1.0, "k": 8},
    notes="identified from PAPO's evaluation README (BUAADreamer/clevr_count_70k); PAPO may "
          "evaluate a fixed subset of the test split")]
