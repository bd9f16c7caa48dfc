"""Predictions in VLMEvalKit's prediction-file layout, written and read back.

VLMEvalKit's inference writes ``{model}_{dataset}.{xlsx|tsv|json}`` (``PRED_FORMAT``): the
benchmark's own table (``index``, ``question``, ``answer``, option columns ``A``.., per-benchmark
columns) plus a ``prediction`` column, and its evaluators read nothing else. ``write_predictions``
writes that table as TSV (``PRED_FORMAT=tsv``; xlsx would need openpyxl) from our records, with
the columns its rule evaluators read for the benchmarks it covers, so VLMEvalKit's evaluation can
be run on our generations; ``read_predictions`` reads such a file (ours or VLMEvalKit's own) back
as ``{sample id: prediction}`` for ``evals score-file``. Our sample id is kept in ``vlmrepro_id``;
a file without it is matched by row order (``index`` 0..n-1 in load order).
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from harness.errors import DataError
from harness.types import Sample

# our benchmark -> VLMEvalKit's dataset name (the file name's second part)
DATASET_NAMES = {"mmstar": "MMStar", "mmmu_pro": "MMMU_Pro_10c", "mmmu_pro_4": "MMMU_Pro_4c",
                 "mmmu_pro_vision": "MMMU_Pro_V", "mathvista": "MathVista_MINI", "mathverse": "MathVerse_MINI",
                 "mathvision": "MathVision", "dynamath": "DynaMath", "wemath": "WeMath", "logicvista": "LogicVista",
                 "hallusionbench": "HallusionBench"}


def dataset_name(bench: str) -> str:
    return DATASET_NAMES.get(bench, bench)


def file_name(model: str, bench: str) -> str:
    safe = re.sub(r"[^\w.-]+", "_", model).strip("_") or "model"
    return f"{safe}_{dataset_name(bench)}.tsv"


def _row(index: int, bench: str, sample: Sample, record: dict) -> dict[str, Any]:
    meta = sample.meta
    pred = record.get("response") if record.get("response") is not None else (record.get("responses") or [""])[0]
    row: dict[str, Any] = {"index": index, "vlmrepro_id": sample.id, "question": sample.prompt,
                           "answer": sample.answer, "prediction": pred or ""}
    for k, v in (sample.choices or {}).items():
        row[k] = v
    if bench.startswith("mathvista"):
        mc = bool(sample.choices)
        row.update({"question_type": "multi_choice" if mc else "free_form",
                    "answer_type": "text" if mc else meta.get("answer_type"),
                    "choices": repr(list((sample.choices or {}).values())),
                    "answer": sample.choices.get(sample.answer, sample.answer) if mc else sample.answer,
                    "answer_option": sample.answer if mc else None,
                    "task": meta.get("task"), "skills": repr(meta.get("skills") or [])})
    elif bench.startswith("hallusionbench"):
        cat, sub, set_id, fig, q = sample.id.split("/", 1)[1].split("/")
        row.update({"index": f"{cat}_{sub}_{index}_{set_id}_{fig}_{q}", "category": cat, "l2-category": sub,
                    "answer": sample.answer.capitalize()})
    elif bench.startswith("wemath"):
        row.update({"ID": meta.get("problem"), "key": meta.get("key"), "knowledge concept": meta.get("concept")})
    elif bench.startswith("dynamath"):
        row["answer_type"] = meta.get("answer_type")
    elif bench.startswith("mathverse"):
        row.update({"question_for_eval": sample.prompt, "problem_version": meta.get("problem_version"),
                    "question_type": meta.get("question_type")})
    return row


def write_predictions(bench: str, samples: list[Sample], records: list[dict], path: Path) -> Path:
    """``records`` (one per sample, in order) as a VLMEvalKit prediction TSV at ``path``."""
    rows = [_row(i, bench, s, r) for i, (s, r) in enumerate(zip(samples, records))]
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, delimiter="\t", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r[k]) for k in cols})
    return path


def read_predictions(path: str | Path, samples: list[Sample]) -> dict[str, str]:
    """``{sample id: prediction}`` from a VLMEvalKit prediction file (``.tsv``, ``.csv``, ``.json``,
    ``.jsonl``, ``.xlsx``), matched by ``vlmrepro_id`` or else by row order."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), None, None, "no such prediction file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".tsv", ".csv"):
            df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", keep_default_na=False, dtype=str)
        elif suffix == ".xlsx":
            df = pd.read_excel(path, dtype=str).fillna("")
        elif suffix == ".jsonl":
            df = pd.DataFrame([json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()])
        elif suffix == ".json":
            df = pd.DataFrame(json.loads(path.read_text(encoding="utf-8")))
        else:
            raise DataError(str(path), None, None, "not a prediction file (.tsv .csv .json .jsonl .xlsx)")
    except ImportError as e:
        raise DataError(str(path), None, None, f"cannot read it here ({e})") from None
    if "prediction" not in df.columns:
        raise DataError(str(path), None, "prediction", "missing column")
    preds = ["" if p is None else str(p) for p in df["prediction"]]
    if "vlmrepro_id" in df.columns:
        got = dict(zip(df["vlmrepro_id"].astype(str), preds))
    else:
        if len(preds) != len(samples):
            raise DataError(str(path), None, None, f"{len(preds)} rows without vlmrepro_id for {len(samples)} samples")
        got = {s.id: p for s, p in zip(samples, preds)}
    missing = [s.id for s in samples if s.id not in got]
    if missing:
        raise DataError(str(path), None, "vlmrepro_id", f"no prediction for {len(missing)} samples (e.g. {missing[0]})")
    return got


class PredictionEngine:
    """A rollout engine that "generates" the predictions of a file: ``evals score-file``."""

    def __init__(self, predictions: dict[str, str]):
        self.predictions = predictions

    def generate(self, samples: list[Sample], sampling: Any) -> Any:
        import torch

        from harness.types import Trajectories

        n = getattr(sampling, "n", 1)
        texts = [self.predictions[s.id] for s in samples for _ in range(n)]
        z = torch.zeros(len(texts), 1, dtype=torch.long)
        return Trajectories(samples=samples, prompt_ids=z, prompt_mask=torch.ones_like(z), response_ids=z,
                            response_mask=torch.ones_like(z), old_logp=torch.zeros(len(texts), 1),
                            group_ids=torch.arange(len(samples)).repeat_interleave(n), texts=texts)

    def sync_weights(self, model: object) -> None:
        pass
