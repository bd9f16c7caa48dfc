"""MATH-500 (Lightman et al.'s subset of MATH; ``HuggingFaceH4/MATH-500``). REOPOLD: Pass@1 at
T=0.6, top-p 0.95. Sub-metrics: per subject and level."""
from evals.benchmarks.textmath import TextMath

BENCHMARKS = [TextMath(
    name="math500", title="MATH-500", hf_id="HuggingFaceH4/MATH-500", split="test", size=500,
    tables=("REOPOLD math table (§4.3): MATH-500",), question_field="problem", answer_field="answer",
    id_field="unique_id", meta_fields=("subject", "level"),
    extra_fields={"unique_id": lambda i: f"test/algebra/{i}.json", "solution": "", "subject": "Algebra",
                  "level": lambda i: 1 + i % 5})]
