"""MATH-500 (Lightman et al.'s subset of MATH; ``HuggingFaceH4/MATH-500``). REOPOLD: Pass@1 at
T=0.6, top-p 0.95. Sub-metrics: per subject and level.
Smoke items: champ-dataset test problems, answers verbatim, capped at 54 (textmath.py);
subjects from champ's categories, level 5."""
from evals.benchmarks.textmath import TextMath

# champ's categories as MATH subjects (smoke rows)
SUBJECTS = {"Combinatorics": "Counting & Probability", "Number-Theory": "Number Theory"}


def _subject(problem) -> str:
    return SUBJECTS.get(problem["category"], "Intermediate Algebra")


BENCHMARKS = [TextMath(
    name="math500", title="MATH-500", hf_id="HuggingFaceH4/MATH-500", split="test", size=500,
    tables=("REOPOLD math table (§4.3): MATH-500",), question_field="problem", answer_field="answer",
    id_field="unique_id", meta_fields=("subject", "level"),
    extra_fields={"unique_id": lambda i, p: f"test/{_subject(p).lower().replace(' ', '_')}/{i}.json",
                  "solution": lambda i, p: p["solution"], "subject": lambda i, p: _subject(p), "level": 5})]
