"""TallyQA (Acharya et al., 2019), test set: counting questions on COCO / Visual Genome images,
"simple" and "complex". There is no canonical Hugging Face copy, so the source is the official
release: ``test.json`` (rows ``image`` (relative path), ``question``, ``answer`` (int),
``data_source``, ``issimple``, ``question_id``, ``image_id``) in a directory with the images.
Scored as an exact integer; sub-metrics simple / complex.
Smoke items: 2 x 2 grids of easy-vqa test images: how many shapes (simple), how many of a colour or a
shape (complex); images as files (evals/smoke.py).
"""
from __future__ import annotations

from evals import smoke
from evals.benchmarks.base import Benchmark


class TallyQA(Benchmark):
    def to_sample(self, row, idx, source, split=None):
        img = self.image(row["image"], source, idx, "image")
        return self.make_sample(str(row.get("question_id", idx)), row["question"], str(row["answer"]),
                                images=[img], answer_type="integer", extra="Answer with a number.",
                                meta={"subset": "simple" if row.get("issimple") else "complex"})

    def smoke_rows(self, n=2, seed=0):
        # simple: how many shapes (1-4 filled cells); complex: how many <colour> shapes / <shape>s
        # among four (0-4)
        rows = []
        for i in range(n):
            key = f"{self.name}/{seed}/{i}"
            simple = i % 2 == 0
            target = None if simple else ("color", "shape")[smoke.key_int(key) % 2]
            cells, count, word = smoke.count_scene(key, target)
            question = ("How many shapes are there?" if simple else
                        f"How many {word} shapes are there?" if target == "color" else f"How many {word}s are there?")
            rows.append({"image": f"easyvqa_test/grid_{smoke.grid_name(cells)}.png", "question": question,
                         "answer": count, "data_source": "amt", "issimple": simple, "question_id": 1000 + i,
                         "image_id": seed * 10000 + i})
        return rows

    def smoke_files(self, rows, seed=0):
        return {r["image"]: smoke.grid_of(r["image"]) for r in rows}


BENCHMARKS = [TallyQA(
    name="tallyqa", title="TallyQA (test)", hf_id=None, split="test", size=38589,
    tables=("REOPOLD tool-use table (§5.3): TallyQA",), family="numeric", scoring="exact integer",
    required=("image", "question", "answer"), group_by=("subset",), sampling={"temperature": 1.0, "top_p": 1.0},
    notes="no hub copy: --source DIR_OR_test.json (official release). Pixel-Reasoner's own test subset "
          "is not public in a form we can pin; REOPOLD's numbers may use a subset")]
