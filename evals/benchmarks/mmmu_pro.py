"""MMMU-Pro (Yue et al., 2025): the *vision* setting (question and options inside a screenshot,
up to 10 options; VOLD) and the *standard* setting with 4 options (VGS's "MMMU-Pro-4") or 10.

Scored by option letter. Sub-metric: per subject.
Smoke items: easy-vqa test colour / shape questions with 4 or 10 options (the vision setting's question
and options drawn under the image) (evals/smoke.py).
"""
from __future__ import annotations

from evals import smoke
from evals.benchmarks.base import Benchmark
from evals.benchmarks.common import choices_from_list, letters_for, parse_list_field

VISION_PROMPT = "Answer the multiple-choice question shown in the image."


class MMMUPro(Benchmark):
    def to_sample(self, row, idx, source, split=None):
        options = parse_list_field(row.get("options"), source, idx, "options")
        choices = choices_from_list(options)
        meta = {"subject": row.get("subject"), "family": "vlm_choice", "letters": list(letters_for(len(options)))}
        if self.config == "vision":
            img = self.image(row.get("image"), source, idx, "image")
            s = self.make_sample(row["id"], VISION_PROMPT, row["answer"], images=[img],
                                 answer_type="multiple_choice", instruction="choice", meta=meta)
            s.choices = choices          # for matching an answer given as option text; not shown
            return s
        images = [self.image(row[f"image_{k}"], source, idx, f"image_{k}")
                  for k in range(1, 8) if row.get(f"image_{k}") is not None]
        return self.make_sample(row["id"], row["question"], row["answer"], images=images, choices=choices,
                                answer_type="multiple_choice",
                                meta={**meta, "difficulty": row.get("topic_difficulty")})

    def smoke_rows(self, n=2, seed=0):
        # 4 or 10 options (the real settings' counts), padded with never-correct distractors; the
        # vision setting draws the question and its options under the image (a "screenshot")
        k = 4 if self.config == "standard (4 options)" else 10
        rows = []
        for i, it in enumerate(smoke.items(self.name, n, seed)):
            opts = smoke.options(it["answer"], it["kind"], f"{self.name}/{seed}/{i}/{it['image_id']}", k=k)
            row = {"id": f"test_Design_{seed * 10000 + i + 1}", "options": str(list(opts.values())),
                   "answer": smoke.option_letter(opts, it["answer"]), "subject": "Design"}
            if self.config == "vision":
                half = (len(opts) + 1) // 2
                pairs = [f"({k}) {v}" for k, v in opts.items()]
                row["image"] = smoke.caption(it["image"], [it["question"], " ".join(pairs[:half]),
                                                           " ".join(pairs[half:])])
            else:
                row.update({"question": f"<image 1> {it['question']}", "explanation": "",
                            "img_type": "['Diagrams']", "topic_difficulty": "Easy"})
                for j in range(1, 8):
                    row[f"image_{j}"] = it["image"] if j == 1 else None
            rows.append(row)
        return rows


_COMMON = dict(hf_id="MMMU/MMMU_Pro", split="test", size=1730, family="vlm_choice",
               scoring="option letter (or the option's text)", group_by=("subject", "difficulty"),
               required=("id", "options", "answer"))
BENCHMARKS = [
    MMMUPro(name="mmmu_pro", title="MMMU-Pro (vision)", config="vision",
            tables=("VOLD Tab.1-3,5: MMMU-Pro (Vision)",), **_COMMON),
    MMMUPro(name="mmmu_pro_4", title="MMMU-Pro (standard, 4 options)", config="standard (4 options)",
            tables=("VGS Tab.1,2,5: MMMU-Pro-4", "PTD-PO Tab.1,2,4,5: MMMU-Pro"),
            notes="PTD-PO (PAPO's suite) does not name the MMMU-Pro setting; the 4-option standard "
                  "setting is assumed", **_COMMON),
    MMMUPro(name="mmmu_pro_10", title="MMMU-Pro (standard, 10 options)", config="standard (10 options)",
            **_COMMON),
]
