"""MATH-Vision (Wang et al., 2024), test split (3,040 competition problems with images).

Rows with options are multiple choice (letters A-E); the rest are free-form. Both scored by
VLMEvalKit's ``post_check`` rule (``can_infer``, ``is_equal``; the latter re-implemented without
``eval``, evals/vlmeval_rules.py). Sub-metrics: per subject and per level.
Smoke items: easy-vqa test colour / shape questions, half with the options as a list (letter answer),
half free form (the word) (evals/smoke.py).
"""
from __future__ import annotations

from evals import smoke
from evals.benchmarks.base import Benchmark
from evals.benchmarks.common import choices_from_list, strip_image_tokens


class MathVision(Benchmark):
    def to_sample(self, row, idx, source, split=None):
        value = row.get("decoded_image")
        img = self.image(value if value is not None else row.get("image"), source, idx, "decoded_image")
        meta = {"subject": row.get("subject"), "level": row.get("level")}
        question = strip_image_tokens(row["question"])
        options = list(row.get("options") or [])
        if options:
            return self.make_sample(row["id"], question, row["answer"], images=[img],
                                    choices=choices_from_list(options), answer_type="multiple_choice",
                                    meta={**meta, "family": "mathvision"})
        return self.make_sample(row["id"], question, row["answer"], images=[img], meta=meta)

    def smoke_rows(self, n=2, seed=0):
        rows = []
        for i, it in enumerate(smoke.items(self.name, n, seed)):
            key = f"{self.name}/{seed}/{i}/{it['image_id']}"
            opts = smoke.options(it["answer"], it["kind"], key) if smoke.key_int(key) % 2 == 0 else {}
            rows.append({
                "id": str(seed * 10000 + i + 1), "question": f"<image1>\n{it['question']}",
                "options": list(opts.values()), "image": f"images/{i + 1}.png", "decoded_image": it["image"],
                "answer": smoke.option_letter(opts, it["answer"]) if opts else it["answer"], "solution": None,
                "level": 1, "subject": "descriptive geometry" if it["kind"] == "shape" else "logic",
            })
        return rows


BENCHMARKS = [MathVision(
    name="mathvision", title="MATH-Vision (test)", hf_id="MathLLMs/MathVision", split="test", size=3040,
    tables=("VOLD Tab.1-3,5: MathVision", "REOPOLD visual table (§5.2): MathVision", "VGS Tab.1,2,5: MathVision"),
    scoring="VLMEvalKit post_check: can_infer / is_equal (no eval)", family="mathvision",
    required=("id", "question", "answer"), group_by=("subject", "level"),
    notes="full test split, as VLMEvalKit's MathVision; testmini (304) via --source on a local copy")]
