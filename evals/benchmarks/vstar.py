"""V* Bench (Wu & Xie, 2024): 191 high-resolution multiple-choice questions on attributes and
spatial relations of small objects (``craigwu/vstar_bench``; images stored as files in the repo,
referenced by relative path). Scored by letter; sub-metric per category. REOPOLD samples at T=1.0.
Smoke items: easy-vqa test colour / shape questions, 4 options ("direct_attributes"; images as files)
(evals/smoke.py).
"""
from __future__ import annotations

import re

from evals import smoke
from evals.benchmarks.base import Benchmark
from evals.benchmarks.common import parse_inline_options

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
        rows = []
        for i, it in enumerate(smoke.items(self.name, n, seed)):
            opts = smoke.options(it["answer"], it["kind"], f"{self.name}/{seed}/{i}/{it['image_id']}", k=4)
            rows.append({
                "image": f"direct_attributes/easyvqa_test_{it['image_id']}.png",
                "text": it["question"] + "\n" + "\n".join(f"({k}) {w}" for k, w in opts.items()) +
                        "\nAnswer with the option's letter from the given choices directly.",
                "label": smoke.option_letter(opts, it["answer"]), "question_id": seed * 10000 + i,
                "category": "direct_attributes",
            })
        return rows

    def smoke_files(self, rows, seed=0):
        return {r["image"]: smoke.test_image(int(r["image"].rsplit("_", 1)[1].split(".")[0])) for r in rows}


BENCHMARKS = [VStar(
    name="vstar", title="V* Bench", hf_id="craigwu/vstar_bench", split="test", size=191,
    tables=("REOPOLD tool-use table (§5.3): V-Star",), family="choice", scoring="option letter",
    required=("image", "text", "label"), group_by=("category",), sampling={"temperature": 1.0, "top_p": 1.0})]
