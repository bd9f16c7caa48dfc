"""TallyQA (Acharya et al., 2019), test set: counting questions on COCO / Visual Genome images,
"simple" and "complex". There is no canonical Hugging Face copy, so the source is the official
release: ``test.json`` (rows ``image`` (relative path), ``question``, ``answer`` (int),
``data_source``, ``issimple``, ``question_id``, ``image_id``) in a directory with the images.
Scored as an exact integer; sub-metrics simple / complex.
"""
from __future__ import annotations

from evals.benchmarks.base import Benchmark
from evals.fixtures import make_image


class TallyQA(Benchmark):
    def to_sample(self, row, idx, source, split=None):
        img = self.image(row["image"], source, idx, "image")
        return self.make_sample(str(row.get("question_id", idx)), row["question"], str(row["answer"]),
                                images=[img], answer_type="integer", extra="Answer with a number.",
                                meta={"subset": "simple" if row.get("issimple") else "complex"})

    def smoke_rows(self, n=2, seed=0):
        return [{"image": f"val2014/COCO_val2014_{seed * 100 + i:012d}.jpg", "question": "How many cups are there?",
                 "answer": i + 1, "data_source": "amt", "issimple": i % 2 == 0, "question_id": 1000 + i,
                 "image_id": seed * 100 + i} for i in range(n)]

    def smoke_files(self, rows, seed=0):
        return {r["image"]: make_image(seed * 100 + i, shapes=r["answer"]) for i, r in enumerate(rows)}


BENCHMARKS = [TallyQA(
    name="tallyqa", title="TallyQA (test)", hf_id=None, split="test", size=38589,
    tables=("REOPOLD tool-use table (§5.3): TallyQA",), family="numeric", scoring="exact integer",
    required=("image", "question", "answer"), group_by=("subset",), sampling={"temperature": 1.0, "top_p": 1.0},
    notes="no hub copy: --source DIR_OR_test.json (official release). Pixel-Reasoner's own test subset "
          "is not public in a form we can pin; REOPOLD's numbers may use a subset")]
