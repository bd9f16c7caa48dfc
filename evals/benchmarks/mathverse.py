"""MathVerse (Zhang et al., 2024), testmini: 788 problems x 5 versions (text dominant ... vision only).

Multiple-choice rows are scored by letter, free-form rows by math-verify. Sub-metrics: accuracy per
problem version (VGS reports Vision Dominant and Vision Only) and per subject.
Smoke items: easy-vqa test colour / shape questions, each in every version of the benchmark (the
options / the whole question drawn into the image for Vision Dominant / Vision Only) (evals/smoke.py).
"""
from __future__ import annotations

from evals import smoke
from evals.benchmarks.base import Benchmark
from evals.benchmarks.common import parse_inline_options, split_question_options

VERSIONS = ("Text Dominant", "Text Lite", "Vision Intensive", "Vision Dominant", "Vision Only")


class MathVerse(Benchmark):
    def __init__(self, name="mathverse", versions: tuple[str, ...] = VERSIONS,
                 question_types: tuple[str, ...] | None = None, title="MathVerse (testmini)",
                 tables=(), size=None, notes=""):
        super().__init__(
            name=name, title=title, hf_id="AI4Math/MathVerse", config="testmini", split="testmini",
            size=size, tables=tables, notes=notes,
            scoring="choice letter (VLMEvalKit can_infer) / equal text or math-verify (free-form)", family="mathverse",
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
                                 meta={**meta, "family": "vlm_choice", "letters": list(choices or "ABCDE")})
            s.choices = choices or None      # options already in the text (or in the image)
            return s
        return self.make_sample(row["sample_index"], question, row["answer"], images=[img], meta=meta)

    def smoke_rows(self, n=2, seed=0):
        # one easy-vqa test item per problem, in each of this benchmark's versions: Text Dominant
        # adds a description, Vision Dominant moves the options into the image, Vision Only draws
        # the whole question there (easy-vqa has no conditions to move, so Text Lite and Vision
        # Intensive read alike)
        per = len(self.versions)
        rows = []
        for p, it in enumerate(smoke.items(self.name, max(1, -(-n // per)), seed)):
            key = f"{self.name}/{seed}/{p}/{it['image_id']}"
            mc = self.question_types == ("multi-choice",) or smoke.key_int(key) % 2 == 0
            opts = smoke.options(it["answer"], it["kind"], key) if mc else {}
            choices = "Choices:\n" + "\n".join(f"{k}:{v}" for k, v in opts.items()) if mc else ""
            for version in self.versions:
                q, image = it["question"], it["image"]
                if version == "Text Dominant":
                    q = "The figure shows one shape drawn on a plain background. " + q
                if version == "Vision Dominant" and mc:
                    image = smoke.caption(image, [choices.replace("\n", " ")])
                    choices_text = ""
                else:
                    choices_text = choices
                if version == "Vision Only":
                    image = smoke.caption(image, [q] + ([choices.replace("\n", " ")] if mc else []))
                    q = ""
                elif choices_text:
                    q = f"{q}\n{choices_text}"
                rows.append({
                    "sample_index": str(seed * 10000 + len(rows) + 1), "problem_index": str(seed * 10000 + p + 1),
                    "problem_version": version, "question": q, "image": image,
                    "answer": smoke.option_letter(opts, it["answer"]) if mc else it["answer"],
                    "question_type": "multi-choice" if mc else "free-form",
                    "metadata": {"split": "testmini", "source": "easy-vqa 1.0 (test)", "subject": "Plane Geometry",
                                 "subfield": "Shape" if it["kind"] == "shape" else "Color"},
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
