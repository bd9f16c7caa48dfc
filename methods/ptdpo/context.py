"""The teacher's privileged context x^h = [x; h] (Eq. 9) as a scoring view, and the student's x.

The student always sees the sample as it is (the policy's view). The frozen reference model, as
teacher, sees the same sample with the privileged text added to the user turn: the hint (PTD-PO),
or for the answer-revealing baselines and analyses (Fig. 3; OPSD, HDPO) the gold answer or the
reference solution. The response ids the two score are the same tensor (harness.scoring), so
their per-token distributions align token for token.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Literal, Optional

from harness.types import Sample

LABELS = {"hint": "Hint", "answer": "The final answer is", "solution": "Reference solution"}


def privileged_text(sample: Sample, privileged: str = "hint") -> Optional[str]:
    """The privileged text of ``sample`` (None when it has none: then there is no teacher)."""
    if privileged == "hint":
        text = sample.hint
    elif privileged == "answer":
        text = sample.answer
    elif privileged == "solution":
        text = sample.response
    else:
        raise ValueError(f"unknown privileged context {privileged!r}; expected one of {tuple(LABELS)}")
    return text if text and str(text).strip() else None


def teacher_view(privileged: str = "hint", position: Literal["after", "before"] = "after"
                 ) -> Callable[[Sample], Sample]:
    """A harness.scoring view: ``sample`` with ``"<label>: <text>"`` after (``[x; h]``, default) or
    before the prompt text; images and system turn unchanged; a sample without the text as is."""
    if position not in ("after", "before"):
        raise ValueError(f"unknown hint position {position!r}")
    if privileged not in LABELS:
        raise ValueError(f"unknown privileged context {privileged!r}; expected one of {tuple(LABELS)}")
    label = LABELS[privileged]

    def view(sample: Sample) -> Sample:
        text = privileged_text(sample, privileged)
        if text is None:
            return sample
        block = f"{label}: {text}"
        prompt = f"{sample.prompt}\n\n{block}" if position == "after" else f"{block}\n\n{sample.prompt}"
        return dataclasses.replace(sample, prompt=prompt)

    view.__name__ = f"with_{privileged}_{position}"
    return view
