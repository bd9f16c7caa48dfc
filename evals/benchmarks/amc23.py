"""AMC 2023 (40 problems; ``math-ai/amc23``). REOPOLD: Avg@32 at T=0.6, top-p 0.95.
Smoke items: champ-dataset test problems, answers verbatim, capped at 54 (textmath.py)."""
from evals.benchmarks.textmath import TextMath

BENCHMARKS = [TextMath(
    name="amc23", title="AMC 2023", hf_id="math-ai/amc23", split="test", size=40,
    tables=("REOPOLD math table (§4.3): AMC-23 (Avg@32)",), question_field="question", answer_field="answer",
    id_field="id", extra_fields={"id": lambda i, p: i, "url": lambda i, p: f"champ-dataset:{p['id']}"})]
