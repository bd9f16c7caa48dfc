"""LogicVista (Xiao et al., 2024): 448 visual logical-reasoning multiple-choice questions; some
have several correct letters (``"A, C"``), which must all be given and nothing else.
Sub-metrics: per skill and per broad capability.
Smoke items: easy-vqa test colour / shape questions as multiple choice, half of them "select all that
apply" over colours and shapes (two gold letters) (evals/smoke.py).
"""
from __future__ import annotations

import random

from evals import smoke
from evals.benchmarks.base import Benchmark
from evals.benchmarks.common import parse_inline_options


class LogicVista(Benchmark):
    def to_sample(self, row, idx, source, split=None):
        img = self.image(row["image"], source, idx, "image")
        choices = parse_inline_options(row["question"])
        s = self.make_sample(str(row["id"]), row["question"], row["answer"], images=[img],
                             answer_type="multiple_choice", instruction=(
                                 "Answer with the letter(s) of the correct option(s), within \\boxed{}."),
                             meta={"skill": row.get("skill"), "broad_capability": row.get("broad_capability"),
                                   "letters": list(choices or "ABCDE"), "multi_answer": True})
        s.choices = choices or None
        return s

    def smoke_rows(self, n=2, seed=0):
        # half single-answer (an easy-vqa test colour / shape question), half "select all that
        # apply" over two colours and two shapes (gold: the two letters naming the image's colour
        # and shape, e.g. "A, D")
        attrs = smoke.attributes()
        rows = []
        for i, it in enumerate(smoke.items(self.name, n, seed)):
            key = f"{self.name}/{seed}/{i}/{it['image_id']}"
            rng = random.Random(key)
            a = attrs.get(it["image_id"], {})
            multi = len(a) == 2 and smoke.key_int(key) % 2 == 0
            if multi:
                words = [a["color"], rng.choice([c for c in smoke.EASY_VQA_COLORS if c != a["color"]]),
                         a["shape"], rng.choice([s for s in smoke.SIDES if s != a["shape"]])]
                rng.shuffle(words)
                opts = {"ABCD"[k]: w for k, w in enumerate(words)}
                question = "Which options describe the figure? Select all that apply."
                answer = ", ".join(k for k, w in opts.items() if w in (a["color"], a["shape"]))
            else:
                opts = smoke.options(it["answer"], it["kind"], key)
                question, answer = it["question"], smoke.option_letter(opts, it["answer"])
            rows.append({
                "id": f"{seed * 10000 + i}", "image": it["image"],
                "question": question + "\n" + "\n".join(f"{k}. {w}" for k, w in opts.items()),
                "answer": answer, "reasoning": "Look at the figure's colour and shape.",
                "skill": "deductive" if multi else "inductive", "broad_capability": "diagram",
                "specific_capability": "shape and colour", "imagesource": "easy-vqa 1.0 (test)", "sourcelink": "",
                "liscenced": "yes",
            })
        return rows


BENCHMARKS = [LogicVista(
    name="logicvista", title="LogicVista", hf_id="lscpku/LogicVista", split="test", size=448,
    tables=("VOLD Tab.1-3,5: LogicVista", "VGS Tab.1,2,5: LogicVista", "PTD-PO Tab.1,2,4,5: LogicVista"),
    scoring="option letter set (exact)", family="choice",
    required=("id", "question", "answer", "image"), group_by=("skill", "broad_capability"))]
