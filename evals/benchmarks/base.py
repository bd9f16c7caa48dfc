"""The ``Benchmark`` base class: where a benchmark's rows come from, how a row becomes a ``Sample``,
how a response is scored and how per-sample records aggregate into the benchmark's metrics.

A subclass (one module per benchmark) sets the data set's coordinates and overrides
``to_sample`` (the real schema -> ``Sample``), ``smoke_rows`` (rows in that exact schema drawn from
real held-out data, evals/smoke.py) and, where the benchmark defines more than accuracy,
``metric_units``.

Rows come from one of three *sources*, all through the same ``to_sample``:
``"hub"`` (``datasets.load_dataset`` at the pinned revision), ``"smoke"`` (``smoke_rows``) or a
local path (a ``.jsonl`` / ``.json`` / ``.parquet`` file or a ``save_to_disk`` directory).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from PIL import Image

from harness.data.images import decode_image
from harness.data.provenance import resolved_revision
from harness.data.prompts import format_prompt
from harness.deadline import call_with_deadline
from harness.errors import DataError
from harness.tiny import smoke_cache_root
from harness.types import Sample

from evals import scoring

SMOKE_ROWS = 2      # the default smoke n (unit tests); recipes ask for more (n up to a few hundred is fast)


@dataclass
class Benchmark:
    """One evaluation benchmark. Field values are the data set's real coordinates."""

    name: str
    title: str
    hf_id: str | None
    split: str | tuple[str, ...]
    config: str | None = None
    size: int | None = None                     # rows in the full split(s)
    tables: tuple[str, ...] = ()                # "paper: table/column" that report it
    scoring: str = ""                           # one line: how a response is scored
    family: str = "math"                        # default family for ``score``
    headline: str = "accuracy"                  # the metric a paper column usually reports
    notes: str = ""                             # choices made where the papers are silent
    required: tuple[str, ...] = ()              # fields every row must have
    group_by: tuple[str, ...] = ()              # Sample.meta keys that get a per-value accuracy
    instruction: str | None = "boxed"           # harness.data.prompts instruction key / text
    kind: str = "vision"                        # "vision" | "text"
    sampling: dict[str, Any] = field(default_factory=dict)   # the papers' sampling, for the README

    # ---------------------------------------------------------------- rows
    def revision(self) -> str:
        from evals.benchmarks.revisions import REVISIONS
        return REVISIONS.get(self.name, "main")

    def revision_sha(self) -> str | None:
        """The commit the hub source resolves to: the pin itself, else the commit the local
        Hugging Face cache holds for the requested branch (``refs/<branch>``), else None."""
        return resolved_revision(self.hf_id, self.revision())

    @property
    def splits(self) -> tuple[str, ...]:
        return (self.split,) if isinstance(self.split, str) else tuple(self.split)

    def hub_rows(self) -> Iterator[tuple[str, dict]]:
        """(split, row) pairs from the Hugging Face hub at the pinned revision."""
        if self.hf_id is None:
            raise DataError(self.name, None, None,
                            "has no canonical Hugging Face copy; pass a local file or directory "
                            "as the source (see evals/README.md)")
        import datasets

        for split in self.splits:
            try:
                ds = datasets.load_dataset(self.hf_id, self.config, split=split, revision=self.revision())
            except ValueError as e:  # datasets raises ValueError for an unknown split
                if "split" in str(e).lower():
                    raise DataError(f"{self.hf_id}[{self.config or 'default'}]", None, None,
                                    f"split {split!r} not found ({e})") from e
                raise
            for row in ds:
                yield split, row

    def local_rows(self, path: Path) -> Iterator[tuple[str, dict]]:
        """(split, row) pairs from a local export of the data set (same schema as the hub)."""
        import datasets

        if not path.exists():
            raise DataError(str(path), None, None, "no such file or directory")
        if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                for split in self.splits:
                    if split not in loaded:
                        raise DataError(str(path), None, None,
                                        f"split {split!r} not found (has {', '.join(loaded)})")
                    for row in loaded[split]:
                        yield split, row
            else:
                for row in loaded:
                    yield self.splits[0], row
            return
        files = [path] if path.is_file() else sorted(
            p for p in path.iterdir() if p.suffix in (".json", ".jsonl", ".parquet"))
        for f in files:
            builder = "parquet" if f.suffix == ".parquet" else "json"
            split = f.stem if f.stem in self.splits else self.splits[0]
            ds = datasets.load_dataset(builder, data_files=str(f), split="train")
            for row in ds:
                yield split, row

    def smoke_rows(self, n: int = SMOKE_ROWS, seed: int = 0) -> list[dict]:
        """``n`` rows in the real data set's exact schema, deterministic in ``(n, seed)``; another
        seed draws other items. Visual benchmarks ask about easy-vqa **test** images, text
        benchmarks pose champ **test** problems (capped at 54); see evals/smoke.py. Benchmarks whose
        items come in groups keep whole groups: MathVerse ceil(n / versions) problems in every
        version, DynaMath ceil(n / 2) seed questions x 2 variants, We-Math whole problems until
        there are >= n rows."""
        raise NotImplementedError

    def smoke_files(self, rows: list[dict], seed: int = 0) -> dict[str, Image.Image]:
        """Image files the smoke rows refer to by relative path (for schemas that store paths)."""
        return {}

    def smoke_split_rows(self, n: int, seed: int) -> Iterator[tuple[str, dict]]:
        for row in self.smoke_rows(n, seed):
            yield row.pop("__split__", self.splits[0]), row

    def image_base(self, source: str | Path) -> Path | None:
        """The directory relative image paths resolve against (hub: downloaded on demand)."""
        return None

    # ---------------------------------------------------------------- load
    def load(self, source: str | Path = "hub", limit: int | None = None, *,
             smoke_n: int = SMOKE_ROWS, seed: int = 0) -> list[Sample]:
        """All samples of the benchmark (or the first ``limit`` *groups*, see ``limit_key``)."""
        base: Path | None = None
        if source == "hub":
            rows: Iterable[tuple[str, dict]] = self.hub_rows()
            where = self.hf_id or self.name
        elif source == "smoke":
            raw = self.smoke_rows(smoke_n, seed)
            files = self.smoke_files(raw, seed)
            if files:
                base = _smoke_image_dir(self.name, files)
            rows = _through_arrow(raw, self.splits[0])
            where = f"smoke:{self.name}"
        else:
            path = Path(source)
            base = path if path.is_dir() else path.parent
            rows = self.local_rows(path)
            where = str(path)
        self._base = base
        self._source = str(source)
        samples: list[Sample] = []
        groups: list[str] = []
        for idx, (split, row) in enumerate(rows):
            self._check_required(row, idx, where)
            sample = self.to_sample(row, idx, where, split=split)
            if sample is None:
                continue
            if limit is not None:
                key = self.limit_key(sample)
                if key not in groups:
                    if len(groups) >= limit:
                        continue
                    groups.append(key)
            samples.append(sample)
        if not samples:
            raise DataError(where, None, None, "no rows loaded")
        return samples

    def limit_key(self, sample: Sample) -> str:
        """``--limit N`` keeps the first N groups (variants of one problem stay together)."""
        return sample.id

    def _check_required(self, row: dict, idx: int, where: str) -> None:
        for key in self.required:
            if key not in row:
                raise DataError(where, idx, key, f"missing field (row has {', '.join(map(str, row))})")
            if key in ("answer", "ground_truth", "gt_answer", "label", "groundtruth", "final_answer",
                       "answers") and (row[key] is None or row[key] == "" or row[key] == []):
                raise DataError(where, idx, key, "answer is missing (empty)")

    def image(self, value: Any, where: str, idx: int, field_name: str) -> Image.Image:
        if isinstance(value, str) and getattr(self, "_source", "") == "hub" and self.hf_id:
            from huggingface_hub import hf_hub_download
            value = hf_hub_download(self.hf_id, value, repo_type="dataset", revision=self.revision())
        return decode_image(value, where, idx, field_name, base_dir=getattr(self, "_base", None))

    # ---------------------------------------------------------------- samples
    def to_sample(self, row: dict, idx: int, source: str, split: str | None = None) -> Sample | None:
        raise NotImplementedError

    def make_sample(self, id: str, question: str, answer: Any, *, images: list[Image.Image] | None = None,
                    choices: dict[str, str] | None = None, answer_type: str = "free_form",
                    meta: dict[str, Any] | None = None, instruction: str | None = "default",
                    extra: str | None = None) -> Sample:
        """A ``Sample`` whose prompt is ``question`` (+ options) + the benchmark's instruction."""
        instr = self.instruction if instruction == "default" else instruction
        text = question.strip()
        if extra:
            text = f"{text}\n{extra}"
        prompt = format_prompt(text, instr, choices)
        return Sample(id=f"{self.name}/{id}", prompt=prompt, answer=str(answer).strip(),
                      images=images or [], choices=choices, answer_type=answer_type,  # type: ignore[arg-type]
                      meta={"benchmark": self.name, **(meta or {})})

    # ---------------------------------------------------------------- scoring
    def score(self, sample: Sample, response: str, extracted: str | None = None,
              use_extracted: bool = False) -> dict[str, Any]:
        """Score one response: ``{"extracted", "score" (0..1), "correct"}``.

        With ``use_extracted`` the answer given (by an LLM extractor) is checked instead of
        extracting one from ``response`` with the rules.
        """
        family = scoring.FAMILIES[sample.meta.get("family", self.family)]
        if family.prepare is not None:
            family.prepare()        # e.g. loading VLMEvalKit's rule modules: not under the deadline
        # the rule-based extraction runs under the same hard limit as harness.rewards.verify
        # (harness.deadline): an extraction that runs past it counts as no answer
        ans = extracted if use_extracted else call_with_deadline(family.extract, response, sample)
        if ans is None and not use_extracted and family.fallback is not None:
            ans = family.fallback(response, sample)     # bounded by its own worker time limit
        value = family.check(ans, sample) if ans is not None else 0.0
        return {"extracted": ans, "score": float(value), "correct": bool(value >= family.pass_mark)}

    # ---------------------------------------------------------------- metrics
    def metric_units(self, records: list[dict]) -> dict[str, list[float]]:
        """Each metric as the list of unit values it is the mean of (so it can be bootstrapped).

        Default: ``accuracy`` over samples plus one accuracy per value of each ``group_by`` key.
        """
        units: dict[str, list[float]] = {"accuracy": [r["score"] for r in records]}
        for key in self.group_by:
            by: dict[str, list[float]] = defaultdict(list)
            for r in records:
                v = r.get("meta", {}).get(key)
                for item in (v if isinstance(v, (list, tuple)) else [v]):
                    if item is not None and item != "":
                        by[str(item)].append(r["score"])
            for v in sorted(by):
                units[f"{key}={v}"] = by[v]
        return units

    def aggregate(self, records: list[dict]) -> dict[str, float]:
        """Metric name -> value in percent."""
        return {k: 100.0 * sum(v) / len(v) for k, v in self.metric_units(records).items() if v}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "hf_id": self.hf_id, "config": self.config,
                "split": ",".join(self.splits), "revision": self.revision(), "size": self.size,
                "tables": list(self.tables), "scoring": self.scoring, "headline": self.headline}


def _smoke_image_dir(name: str, files: dict[str, Image.Image]) -> Path:
    """A directory holding the smoke rows' image files, in the smoke cache and named by a hash of
    their content: written once (into a temporary directory renamed into place), reused by every
    later load, never left behind as one temporary directory per load."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        img = files[rel]
        digest.update(f"{rel}\0{img.mode}\0{img.size}\0".encode())
        digest.update(img.tobytes())
    final = smoke_cache_root() / "smoke-images" / f"{name}-{digest.hexdigest()[:16]}"
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    for rel, img in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        img.save(tmp / rel)
    os.chmod(tmp, 0o755)
    try:
        os.rename(tmp, final)
    except OSError:  # written meanwhile by another process: same content, keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _through_arrow(raw: list[dict], default_split: str) -> Iterator[tuple[str, dict]]:
    """Fixture rows round-tripped through ``datasets.Dataset`` (Arrow), split by split, so they
    reach ``to_sample`` in the types the hub data has (decoded images, lists, None)."""
    import datasets

    by_split: dict[str, list[dict]] = {}
    for r in raw:
        r = dict(r)
        by_split.setdefault(r.pop("__split__", default_split), []).append(r)
    for split, rows in by_split.items():
        for row in datasets.Dataset.from_list(rows):
            yield split, row


def group_scores(records: list[dict], key_fn) -> list[list[float]]:
    """Records' per-sample scores grouped by ``key_fn(record)`` (insertion order)."""
    by: dict[Any, list[float]] = {}
    for r in records:
        by.setdefault(key_fn(r), []).append(r["score"])
    return list(by.values())
