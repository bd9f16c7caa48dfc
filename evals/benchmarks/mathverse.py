"""MathVerse (Zhang et al., 2024), testmini: 788 problems x 5 versions (text dominant ... vision only).

Multiple-choice rows are scored by letter, free-form rows by math-verify. Sub-metrics: accuracy per
problem version (VGS reports Vision Dominant and Vision Only) and per subject.
"""
from __future__ import annotations

from evals.benchmarks.base import Benchmark
from evals.benchmarks.common import parse_inline_options, split_question_options
from evals.fixtures import make_image

VERSIONS = ("Text Dominant", "Text Lite", "Vision Intensive", "Vision Dominant", "Vision Only")


class MathVerse(Benchmark):
    def __init__(self, name="mathverse", versions: tuple[str, ...] = VERSIONS,
                 question_types: tuple[str, ...] | None = None, title="MathVerse (testmini)",
                 tables=(), size=None, notes=""):
        super().__init__(
            name=name, title=title, hf_id="AI4Math/MathVerse", config="testmini", split="testmini",
            size=size, tables=tables, notes=notes,
            scoring="choice letter (multi-choice) / math-verify (free-form)", family="math",
            required=("sample_index", "problem_index", "problem_version", "question", "answer",
                      "question_type"),
            group_by=("problem_version", "subject", "question_type"))
        self.versions, self.question_types = versions, question_types

    def limit_key(self, sample):
        return str(sample.meta["problem_index"])

    def to_sample(self, row, idx, source, split=None):
        if row["problem_version"] not in self.versions:
            return None
        if self.question_types and row["question_type"] not in self.question_types:
            return None
        img = self.image(row.get("image"), source, idx, "image")
        question = (row["question"] or "").strip() or "Answer the question shown in the image."
        md = row.get("metadata") or {}
        meta = {"problem_version": row["problem_version"], "subject": md.get("subject"),
                "question_type": row["question_type"], "problem_index": row["problem_index"]}
        if row["question_type"] == "multi-choice":
            _, choices = split_question_options(question)
            choices = choices or parse_inline_options(question)
            s = self.make_sample(row["sample_index"], question, row["answer"], images=[img],
                                 answer_type="multiple_choice", instruction="choice",
                                 meta={**meta, "family": "choice", "letters": list(choices or "ABCDE")})
            s.choices = choices or None      # options already in the text (or in the image)
            return s
        return self.make_sample(row["sample_index"], question, row["answer"], images=[img], meta=meta)

    def smoke_rows(self, n=2, seed=0):
        rows = []
        for i in range(n):
            mc = i % 2 == 0
            version = self.versions[i % len(self.versions)]
            q = ("In the figure, what is the value of x?\nChoices:\nA:2\nB:4\nC:6\nD:8" if mc
                 else "In the figure, find the length of AB.")
            if version == "Vision Only":
                q = ""
            rows.append({
                "sample_index": str(seed * 100 + i + 1), "problem_index": str(i // 2 + 1),
                "problem_version": version, "question": q, "image": make_image(seed * 100 + i),
                "answer": "B" if mc else "\\frac{3}{2}", "question_type": "multi-choice" if mc else "free-form",
                "metadata": {"split": "testmini", "source": "smoke", "subject": "Plane Geometry",
                             "subfield": "Length"},
                "query_wo": q, "query_cot": q, "question_for_eval": q,
            })
        return rows


V_NOTE = ("PTD-PO's 'MathVerseV' (PAPO's vision-dependent subset) is read as the Vision Intensive, "
          "Vision Dominant and Vision Only versions")
BENCHMARKS = [
    MathVerse(size=3940, tables=("VOLD Tab.1-3,5: MathVerse", "REOPOLD visual table (§5.2): MathVerse")),
    MathVerse("mathverse_vd", versions=("Vision Dominant",), title="MathVerse testmini, Vision Dominant",
              size=788, tables=("VGS Tab.1,2,5: MathVerse-VD",)),
    MathVerse("mathverse_vo", versions=("Vision Only",), title="MathVerse testmini, Vision Only",
              size=788, tables=("VGS Tab.1,2,5: MathVerse-VO",)),
    MathVerse("mathverse_v", versions=("Vision Intensive", "Vision Dominant", "Vision Only"),
              title="MathVerse testmini, vision-dependent versions", size=2364,
              tables=("PTD-PO Tab.1,2,4: MathVerseV",), notes=V_NOTE),
    MathVerse("mathverse_mc", question_types=("multi-choice",), title="MathVerse testmini, multiple choice",
              tables=("PTD-PO Tab.1,2,4,5: MathVerse",),
              notes="PTD-PO filters free-form MathVerse questions out"),
]
