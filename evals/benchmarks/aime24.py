"""AIME 2024 (30 problems; ``HuggingFaceH4/aime_2024``). REOPOLD reports Avg@32 at T=0.6, top-p 0.95:
``evals run --mode sample --k 32 --temperature 0.6 --top-p 0.95`` (accuracy = mean over the 32).
Smoke items: champ-dataset test problems, answers verbatim, capped at 54 (textmath.py)."""
from evals.benchmarks.textmath import TextMath

BENCHMARKS = [TextMath(
    name="aime24", title="AIME 2024", hf_id="HuggingFaceH4/aime_2024", split="train", size=30,
    tables=("REOPOLD math table (§4.3): AIME-24 (Avg@32)",), question_field="problem", answer_field="answer",
    id_field="id", extra_fields={"id": lambda i, p: 60 + i, "solution": lambda i, p: p["solution"],
                  "url": lambda i, p: f"champ-dataset:{p['id']}", "year": "2024"})]
