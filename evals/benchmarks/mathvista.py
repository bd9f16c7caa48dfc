"""MathVista (Lu et al., 2024), testmini: multiple choice and free-form numeric questions on images.

Scoring is VLMEvalKit's ``post_check`` rule itself: multiple choice by ``can_infer`` (option
letter or option text); integer / float answers equal after ``int()`` / ``float()`` (exact: no
rounding, extra decimals are wrong); list answers never match by rule (as in VLMEvalKit 0.0.20,
whose rule compares ``str(None)``). Sub-metrics: per question type, answer type, task and skill.
Smoke items: easy-vqa test colour / shape questions (multiple choice), and shape items asked free form as
the shape's number of straight sides (integer) or half of it (float, precision 1) (evals/smoke.py).
"""
from __future__ import annotations

from harness.errors import DataError

from evals import smoke
from evals.benchmarks.base import Benchmark
from evals.benchmarks.common import choices_from_list


class MathVista(Benchmark):
    def __init__(self, name: str = "mathvista", question_types: tuple[str, ...] | None = None,
                 tables: tuple[str, ...] = ("VOLD Tab.1-3,5: MathVista",
                                            "REOPOLD visual table (§5.2): MathVista"), **kw):
        super().__init__(
            name=name, title="MathVista (testmini)", hf_id="AI4Math/MathVista", split="testmini",
            size=1000 if question_types is None else None,
            tables=tables,
            scoring="VLMEvalKit post_check: choice letter (can_infer) / int() or float() equal",
            family="mathvista", required=("pid", "question", "answer", "question_type", "answer_type"),
            group_by=("question_type", "answer_type", "task", "skills"), **kw)
        self.question_types = question_types

    def to_sample(self, row, idx, source, split=None):
        if self.question_types and row["question_type"] not in self.question_types:
            return None
        value = row.get("decoded_image")
        img = self.image(value if value is not None else row.get("image"), source, idx, "decoded_image")
        md = row.get("metadata") or {}
        meta = {"question_type": row["question_type"], "answer_type": row["answer_type"],
                "task": md.get("task"), "skills": md.get("skills"), "pid": row["pid"]}
        if row["question_type"] == "multi_choice":
            choices = choices_from_list(list(row.get("choices") or []))
            if not choices:
                raise DataError(source, idx, "choices", "multi_choice question without choices")
            gold = [k for k, v in choices.items() if v == str(row["answer"]).strip()]
            if not gold:
                raise DataError(source, idx, "answer", f"{row['answer']!r} is not one of the choices")
            return self.make_sample(row["pid"], row["question"], gold[0], images=[img], choices=choices,
                                    answer_type="multiple_choice", meta={**meta, "family": "mathvista"})
        atype, prec = row["answer_type"], row.get("precision")
        if atype == "integer":
            hint, family = "Answer with an integer.", "numeric"
            meta["precision"] = 0
        elif atype == "float":
            p = int(prec) if prec is not None else 2
            hint, family = f"Answer with a number with {p} decimal place(s).", "numeric"
            meta["precision"] = p
        else:
            hint, family = "Answer with a Python list.", "math"
        unit = row.get("unit")
        if unit:
            hint += f" (Unit: {unit})"
        return self.make_sample(row["pid"], row["question"], row["answer"], images=[img],
                                answer_type="numeric" if family == "numeric" else "free_form",
                                meta={**meta, "family": "mathvista"}, extra=hint)

    def smoke_rows(self, n=2, seed=0):
        # colour items: multiple choice (4 colours); shape items: multiple choice (3 shapes) or
        # free form, "how many straight sides" as an integer or (half of it) a float at precision 1
        # (both kinds, unlike most benchmarks' colour-only items: the shapes carry the integer and
        # float fields that MathVista's scoring rules exercise)
        rows = []
        for i, it in enumerate(smoke.items(self.name, n, seed, kinds=("color", "shape"))):
            key = f"{self.name}/{seed}/{i}/{it['image_id']}"
            form = "multi_choice" if it["kind"] == "color" or self.question_types else \
                ("multi_choice", "integer", "float")[smoke.key_int(key) % 3]
            row = {"pid": str(i + 1), "image": f"images/{i + 1}.png", "decoded_image": it["image"], "unit": None,
                   "precision": None, "query": "",
                   "metadata": {"category": "general-vqa", "context": "abstract scene", "grade": "elementary school",
                                "img_height": 64, "img_width": 64, "language": "english",
                                "skills": ["logical reasoning"], "source": "easy-vqa 1.0 (test)",
                                "split": "testmini", "task": "visual question answering"}}
            if form == "multi_choice":
                opts = smoke.options(it["answer"], it["kind"], key)
                row.update({"question": it["question"], "choices": list(opts.values()), "answer": it["answer"],
                            "question_type": "multi_choice", "answer_type": "text"})
            else:
                sides = smoke.SIDES[it["answer"]]
                integer = form == "integer"
                row.update({"question": "How many straight sides does the shape have?" if integer else
                            "What is half the number of straight sides of the shape?",
                            "choices": None, "answer": str(sides) if integer else f"{sides / 2:.1f}",
                            "precision": None if integer else 1.0, "question_type": "free_form",
                            "answer_type": form})
                row["metadata"] = {**row["metadata"], "skills": ["geometry reasoning", "arithmetic reasoning"]}
            rows.append(row)
        return rows


BENCHMARKS = [MathVista(), MathVista("mathvista_mc", question_types=("multi_choice",),
                                     tables=("PTD-PO Tab.1,2,4: MathVista",),
                                     notes="PTD-PO filters free-form MathVista questions out")]
