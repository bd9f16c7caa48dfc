"""Pixel-Reasoner's own test split (Su et al., 2025), REOPOLD Table 6's "Pixel" column.

Source. Pixel-Reasoner and VerlTool publish no separate test set: VerlTool's data preparation
(``examples/data_preprocess/pixel_reasoner/prepare_train.py``) holds out 100 queries of the RL
training set ``TIGER-Lab/PixelReasoner-RL-Data`` (split ``train``) with
``datasets.Dataset.train_test_split(test_size=100, seed=42)`` and validates on them; Table 6's
Pixel numbers are whole percentages (46.00, 52.00, 57.00, ...), which fits 100 items. This module
takes the same held-out 100 (``harness.data.pixel_reasoner.select_split``, which the training loader
uses for the other side, so training and evaluation are disjoint by construction). [A] VerlTool splits *after* dropping prompts longer than 8,192
tokens under the Qwen2.5-VL-7B processor (``--filter_len 8192``, and with or without videos
depending on the run), so its 100 items are not exactly reproducible without that processor; here
the split is taken over the image (non-video) rows, without the length filter. Video rows (a few
percent of the set) are skipped in any case: the harness does not evaluate video.

Schema (``release`` rows): ``qid``, ``question`` (text; the image is not inlined), ``image`` (a
list of paths inside the repository's ``images.zip``), ``is_video``, ``answer`` (a list of gold
strings). Hub images: ``images.zip`` is downloaded once and extracted next to the Hugging Face
cache copy (``<zip dir>/images``).

Scoring: Pixel-Reasoner's rule as VerlTool implements it (``pixel_reasoner`` reward manager): the
final ``\\boxed{}`` answer against each gold by math-verify, retried in lower case
(``evals.scoring.check_pixel_reasoner``). Protocol (REOPOLD §5.4 / App. C, after Pixel-Reasoner):
multi-turn with the ``crop_image`` tool, at most 5 rounds, T = 1.0, top-p 1.0, max response 8192;
the recipe's column sets ``tool_rounds`` (``evals run --tool-rounds``).

Smoke items: easy-vqa test colour / shape questions, free form, in this schema (images as files;
evals/smoke.py).
"""
from __future__ import annotations

from typing import Any, Iterator

from harness.data.images import decode_image
from harness.data.pixel_reasoner import HELD_OUT, images_root, resolve_image, select_split
from harness.errors import DataError

from evals import smoke
from evals.benchmarks.base import Benchmark



class PixelReasoner(Benchmark):
    def hub_rows(self) -> Iterator[tuple[str, dict]]:
        import datasets

        rows = list(datasets.load_dataset(self.hf_id, self.config, split="train", revision=self.revision()))
        for _, row in select_split(rows, "test"):
            yield self.splits[0], row

    def image(self, value: Any, where: str, idx: int, field_name: str):
        if isinstance(value, str) and getattr(self, "_source", "") == "hub":
            path = resolve_image(images_root(self.hf_id, self.revision()), value)
            return decode_image(str(path), where, idx, field_name)
        return super().image(value, where, idx, field_name)

    def to_sample(self, row, idx, source, split=None):
        if row.get("is_video"):
            return None
        paths = row["image"] if isinstance(row["image"], list) else [row["image"]]
        if not paths:
            raise DataError(source, idx, "image", "no image")
        images = [self.image(p, source, idx, "image") for p in paths]
        answers = [str(a) for a in (row["answer"] if isinstance(row["answer"], list) else [row["answer"]])]
        return self.make_sample(str(row.get("qid", idx)), row["question"], answers[0], images=images,
                                answer_type="free_form", meta={"answers": answers, "family": "pixel_reasoner"})

    def smoke_rows(self, n=2, seed=0):
        return [{
            "qid": f"smoke-{seed}-{i}", "question": it["question"],
            "image": [f"images/easyvqa_test_{it['image_id']}.png"], "is_video": False, "answer": [it["answer"]],
        } for i, it in enumerate(smoke.items(self.name, n, seed))]

    def smoke_files(self, rows, seed=0):
        return {r["image"][0]: smoke.test_image(int(r["image"][0].rsplit("_", 1)[1].split(".")[0])) for r in rows}


BENCHMARKS = [PixelReasoner(
    name="pixel_reasoner", title="Pixel-Reasoner test split (100 held out of PixelReasoner-RL-Data)",
    hf_id="TIGER-Lab/PixelReasoner-RL-Data", split="test", size=HELD_OUT,
    tables=("REOPOLD tool-use table (§5.4): Pixel",), family="pixel_reasoner",
    scoring="boxed answer vs any gold by math-verify (lower-case retry), Pixel-Reasoner's rule",
    required=("question", "image", "answer"), sampling={"temperature": 1.0, "top_p": 1.0, "tool_rounds": 5},
    notes="[A] the 100 held-out queries are VerlTool's train_test_split(test_size=100, seed=42), taken here "
          "over the non-video rows without VerlTool's 8192-token prompt filter")]
