"""AIME 2025 (30 problems; ``math-ai/aime25``). REOPOLD: Avg@32 at T=0.6, top-p 0.95.
Smoke items: champ-dataset test problems, answers verbatim, capped at 54 (textmath.py)."""
from evals.benchmarks.textmath import TextMath

BENCHMARKS = [TextMath(
    name="aime25", title="AIME 2025", hf_id="math-ai/aime25", split="test", size=30,
    tables=("REOPOLD math table (§4.3): AIME-25 (Avg@32)",), question_field="problem", answer_field="answer",
    id_field="id", extra_fields={"id": lambda i, p: str(i)})]
