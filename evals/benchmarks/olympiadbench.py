"""OlympiadBench (He et al., 2024), the English, text-only, open-ended maths competition subset
(``OE_TO_maths_en_COMP``, 674 problems). Gold = ``final_answer[0]`` without ``$``; several
answers (``is_multiple_answer``) are compared as one comma-separated tuple by math-verify.
Smoke items: champ-dataset test problems (see textmath.py), gold as ``["$answer$"]``."""
from harness.errors import DataError

from evals.benchmarks.textmath import TextMath


SUBFIELDS = {"Combinatorics": "Combinatorics", "Number-Theory": "Number Theory"}   # champ -> subfield (smoke)


def _gold(value) -> str:
    answers = value if isinstance(value, (list, tuple)) else [value]
    answers = [str(a).strip().strip("$").strip() for a in answers if a is not None and str(a).strip()]
    if not answers:
        raise DataError("olympiadbench", None, "final_answer", "answer is missing (empty)")
    return ", ".join(answers)


BENCHMARKS = [TextMath(
    name="olympiadbench", title="OlympiadBench (OE_TO_maths_en_COMP)", hf_id="Hothan/OlympiadBench",
    config="OE_TO_maths_en_COMP", split="train", size=674, tables=("REOPOLD math table (§4.3): OlympiadBench",),
    question_field="question", answer_field="final_answer", id_field="id", answer_of=_gold,
    meta_fields=("subfield",), smoke_answer=lambda a: [f"${a}$"],
    extra_fields={"id": lambda i, p: 1600 + i, "solution": lambda i, p: [p["solution"]], "context": None,
                  "image_1": None, "image_2": None, "image_3": None, "image_4": None, "image_5": None,
                  "modality": "Text-only", "difficulty": "Competition", "is_multiple_answer": False, "unit": None,
                  "answer_type": "Numerical", "error": None, "question_type": "Open-ended",
                  "subfield": lambda i, p: SUBFIELDS.get(p["category"], "Algebra"), "subject": "Math",
                  "language": "English"})]
