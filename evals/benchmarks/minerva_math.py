"""Minerva Math (Lewkowycz et al., 2022; 272 problems, ``math-ai/minervamath``). REOPOLD: Pass@1.
Smoke items: champ-dataset test problems, answers verbatim, capped at 54 (textmath.py)."""
from evals.benchmarks.textmath import TextMath

BENCHMARKS = [TextMath(
    name="minerva_math", title="Minerva Math", hf_id="math-ai/minervamath", split="test", size=272,
    tables=("REOPOLD math table (§4.3): Minerva",), question_field="question", answer_field="answer")]
