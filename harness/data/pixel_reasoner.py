"""Pixel-Reasoner's RL set ``TIGER-Lab/PixelReasoner-RL-Data``: the training split of REOPOLD's
tool-use setting (Table 6) and the 100 held-out queries ``evals`` scores as its "Pixel" column.

Schema (as VerlTool's ``examples/data_preprocess/pixel_reasoner/prepare_train.py`` reads it):
``qid``, ``question`` (text; the image is not inlined), ``image`` (a list of paths inside the
repository's ``images.zip``), ``is_video``, ``answer`` (a list of gold strings; a bare string is
accepted).

Split. VerlTool validates on ``train_test_split(test_size=100, seed=42)`` of the set and trains on
the rest. :func:`split_positions` computes the same partition with ``datasets`` itself over the
non-video rows (video rows are dropped: the harness trains and evaluates images only), so the
training loader here and ``evals.benchmarks.pixel_reasoner`` are disjoint by construction.
[A] VerlTool splits after dropping prompts over 8,192 tokens under the Qwen2.5-VL-7B processor,
which is not reproducible without that processor; the split here skips that filter.

Prompt. The row's question is kept verbatim (instruction None) under the tool-use system prompt
(:func:`harness.tools.tool_system_prompt` with ``crop_image``), the prompt the smoke tool-use warm
start and multi-turn evaluation use. [A] Pixel-Reasoner's own system prompt is not reproduced.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

from harness.errors import DataError
from harness.types import Sample

__all__ = ["HUB_ID", "HELD_OUT", "SPLIT_SEED", "split_positions", "select_split", "images_root",
           "map_pixel_reasoner", "load_pixel_reasoner"]

HUB_ID = "TIGER-Lab/PixelReasoner-RL-Data"
HELD_OUT = 100   # VerlTool: train_test_split(test_size=100, seed=42)
SPLIT_SEED = 42
SPLITS = ("train", "test")


def split_positions(n: int) -> dict[str, list[int]]:
    """Positions (0..n-1, in the non-video row order) of VerlTool's train and test splits, computed
    by ``datasets.Dataset.train_test_split`` exactly as VerlTool calls it."""
    import datasets

    if n <= HELD_OUT:
        raise DataError(HUB_ID, None, None, f"{n} image rows; the hold-out needs more than {HELD_OUT}")
    parts = datasets.Dataset.from_dict({"pos": list(range(n))}).train_test_split(
        test_size=HELD_OUT, seed=SPLIT_SEED, keep_in_memory=True)
    return {name: list(parts[name]["pos"]) for name in SPLITS}


def select_split(rows: Iterable[Any], split: str) -> Iterator[tuple[int, Any]]:
    """``(original row index, row)`` of the ``split`` rows, video rows dropped."""
    if split not in SPLITS:
        raise DataError(HUB_ID, None, None, f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    images = [(i, r) for i, r in enumerate(rows) if not (isinstance(r, dict) and r.get("is_video"))]
    for pos in split_positions(len(images))[split]:
        yield images[pos]


def images_root(hub_id: str = HUB_ID, revision: str | None = None) -> Path:
    """The directory the rows' image paths resolve against: ``images.zip`` downloaded once and
    extracted next to the Hugging Face cache copy."""
    from huggingface_hub import hf_hub_download

    from harness.data.training_sets import unpack_once

    archive = Path(hf_hub_download(hub_id, "images.zip", repo_type="dataset", revision=revision))
    root = archive.parent / "images"
    unpack_once(archive, root, root / ".extracted")
    return root


def resolve_image(root: Path, rel: str) -> Path:
    """``root / rel``, or ``root / images / rel`` for archives that keep a top-level folder."""
    path = root / rel
    return path if path.exists() else root / "images" / rel


def map_pixel_reasoner(row: Any, idx: int, ctx) -> Sample:
    """One Pixel-Reasoner RL row -> a tool-use :class:`Sample` (gold list in ``meta["answers"]``)."""
    from harness.data.images import decode_image
    from harness.data.prompts import format_prompt
    from harness.data.training_sets import _get, _row_id
    from harness.tools import tool_system_prompt

    if not isinstance(row, dict):
        raise DataError(ctx.source, idx, None, f"expected a mapping, got {type(row).__name__}")
    question = _get(row, "question", ctx, idx)
    paths = row.get("image")
    paths = [paths] if isinstance(paths, str) else paths
    if not isinstance(paths, list) or not paths:
        raise DataError(ctx.source, idx, "image", "missing or empty (a list of paths)")
    base = Path(ctx.base_dir) if ctx.base_dir is not None else None
    images = [decode_image(str(resolve_image(base, p)) if base is not None and isinstance(p, str) else p,
                           ctx.source, idx, f"image[{k}]") for k, p in enumerate(paths)]
    golds = row.get("answer")
    golds = golds if isinstance(golds, list) else [golds]
    answers = [str(a).strip() for a in golds if a is not None and str(a).strip()]
    if not answers:
        raise DataError(ctx.source, idx, "answer", "missing or empty")
    return Sample(id=_row_id(ctx, row, idx), prompt=format_prompt(question, ctx.instruction), answer=answers[0],
                  images=images, system=tool_system_prompt(["crop_image"]),
                  meta={"question": question, "answers": answers, "qid": row.get("qid"), "family": "pixel_reasoner"})


def load_pixel_reasoner(source: str | Path | None = None, split: str = "train", *, limit: int | None = None,
                        revision: str | None = None, instruction: str | None = None,
                        prefix: str = "pixelreasoner-rl") -> list[Sample]:
    """The ``split`` ("train": everything but VerlTool's 100 held-out queries; "test": those 100)
    of the hub set (``source`` None) or of a local copy in its schema (a file or directory of
    json/jsonl/parquet rows or a ``save_to_disk`` directory; image paths relative to it)."""
    from harness.data.training_sets import RowContext, iter_rows

    if source is None:
        import datasets

        rows: list[Any] = list(datasets.load_dataset(HUB_ID, split="train", revision=revision))
        label, base = f"{HUB_ID}[train]", images_root(HUB_ID, revision)
    else:
        triples = list(iter_rows(source, "train"))
        rows = [r for _, _, _, r in triples]
        label = triples[0][0] if triples else str(source)
        base = triples[0][1] if triples else None
    out: list[Sample] = []
    for idx, row in select_split(rows, split):
        if limit is not None and len(out) >= limit:
            break
        out.append(map_pixel_reasoner(row, idx, RowContext(label, base, instruction, prefix)))
    return out
