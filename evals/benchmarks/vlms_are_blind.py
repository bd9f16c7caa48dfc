"""VLMs are Blind (BlindTest; Rahmanzadehgervi et al., 2024): low-level visual tasks (counting
line intersections, circles, nested squares, grid rows...). The data set's own prompt asks for
the answer in curly brackets (``{3}``); the last ``\\boxed{}`` or, failing that, the last ``{...}``
is the answer, compared as a number or as normalised text. Sub-metric per task.
Smoke items: 2 x 2 grids of easy-vqa test images: how many shapes, or how many circles / triangles /
rectangles (evals/smoke.py).
"""
from __future__ import annotations

import re

from harness.types import Sample

from evals import scoring, smoke
from evals.benchmarks.base import Benchmark


def extract_braced(response: str, sample: Sample) -> str | None:
    text = (response or "")[-20000:]
    if "\\boxed" not in text:
        found = re.findall(r"\{([^{}]{1,100})\}", text)
        if found:
            return found[-1].strip()
    return scoring.final_answer(text)


scoring.FAMILIES.setdefault("braced", scoring.Family("braced", extract_braced, scoring.check_text))


class VLMsAreBlind(Benchmark):
    def to_sample(self, row, idx, source, split=None):
        img = self.image(row["image"], source, idx, "image")
        gold = str(row["groundtruth"]).strip().strip("{}").strip()
        return self.make_sample(f"{row['task']}/{idx}", row["prompt"], gold, images=[img], answer_type="text",
                                instruction=None, meta={"task": row["task"]})

    def smoke_rows(self, n=2, seed=0):
        rows = []
        for i in range(n):
            key = f"{self.name}/{seed}/{i}"
            shapes = i % 2 == 0
            cells, count, word = smoke.count_scene(key, None if shapes else "shape")
            rows.append({"task": "Counting Shapes" if shapes else f"Counting {word.capitalize()}s",
                         "image": smoke.grid(cells),
                         "prompt": (f"How many {'shapes' if shapes else word + 's'} are there in the image? "
                                    "Answer with a number in curly brackets, e.g., {3}."),
                         "groundtruth": str(count), "metadata": "{}"})
        return rows


BENCHMARKS = [VLMsAreBlind(
    name="vlms_are_blind", title="VLMs are Blind (BlindTest)", hf_id="XAI/vlmsareblind", split="valid",
    size=None, tables=("VGS Tab.1,2,5: VlmsAreBlind",), family="braced",
    scoring="number / normalised text in the last \\boxed{} or {...}",
    required=("task", "image", "prompt", "groundtruth"), group_by=("task",),
    notes="the hub copy has been re-uploaded with 7,656 and 9,704 rows; pin the revision used")]
