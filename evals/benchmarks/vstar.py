"""V* Bench (Wu & Xie, 2024): 191 high-resolution multiple-choice questions on attributes and
spatial relations of small objects (``craigwu/vstar_bench``; images stored as files in the repo,
referenced by relative path). Scored by letter; sub-metric per category. REOPOLD samples at T=1.0.
"""
from __future__ import annotations

import re

from evals.benchmarks.base import Benchmark
from evals.benchmarks.common import parse_inline_options
from evals.fixtures import make_image

_DIRECT = re.compile(r"\s*Answer with the option's letter from the given choices directly\.?\s*$", re.I)


class VStar(Benchmark):
    def to_sample(self, row, idx, source, split=None):
        img = self.image(row["image"], source, idx, "image")
        question = _DIRECT.sub("", row["text"])
        choices = parse_inline_options(question)
        s = self.make_sample(str(row.get("question_id", idx)), question, row["label"], images=[img],
                             answer_type="multiple_choice", instruction="choice",
                             meta={"category": row.get("category"), "family": "choice",
                                   "letters": list(choices or "ABCD")})
        s.choices = choices or None
        return s

    def smoke_rows(self, n=2, seed=0):
        cats = ("direct_attributes", "relative_position")
        return [{
            "image": f"{cats[i % 2]}/sa_{seed * 100 + i}.jpg",
            "text": "What is the color of the cup?\n(A) red\n(B) blue\n(C) green\n(D) white\n"
                    "Answer with the option's letter from the given choices directly.",
            "label": "ABCD"[i % 4], "question_id": i, "category": cats[i % 2],
        } for i in range(n)]

    def smoke_files(self, rows, seed=0):
        return {r["image"]: make_image(seed * 100 + i, 96, 96) for i, r in enumerate(rows)}


BENCHMARKS = [VStar(
    name="vstar", title="V* Bench", hf_id="craigwu/vstar_bench", split="test", size=191,
    tables=("REOPOLD tool-use table (§5.3): V-Star",), family="choice", scoring="option letter",
    required=("image", "text", "label"), group_by=("category",), sampling={"temperature": 1.0, "top_p": 1.0})]
