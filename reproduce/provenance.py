"""Run provenance: what produced a report's numbers (code, configs, data, packages, hardware).

Every report carries ``provenance``::

    {"code_revision": "<git sha or 'unknown'>",     (the code that built the report)
     "training_revisions": {"<stage dir>": "<sha>[ -> <sha> ...]"},   (the code that trained each stage)
     "config_hashes": {"recipe": sha, "published": sha, "eval_settings": sha, "<stage dir>": sha},
     "dataset_revisions": {"<benchmark>": "<hf_id>@<revision> (<source>)"},
     "packages": {"python": ..., "torch": ..., "transformers": ..., "vllm": ..., "vlmeval": ...},
     "hardware": {"platform": ..., "cpus": n, "accelerators": [...]}}

:func:`provenance_differences` says how two reports' provenances differ (``reproduce compare``).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Optional

PACKAGES = ("torch", "transformers", "vllm", "vlmeval", "numpy", "accelerate", "datasets")
"""Distributions whose versions are recorded (``vlmeval`` is VLMEvalKit's distribution name)."""
SHORT = 12


def sha(data: bytes | str) -> str:
    """A short sha256 of ``data`` (bytes or text)."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:SHORT]


def file_sha(path: Path) -> Optional[str]:
    path = Path(path)
    return sha(path.read_bytes()) if path.is_file() else None


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, Optional[str]]:
    """Installed version of each distribution; None when it is not installed."""
    out: dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def hardware() -> dict[str, Any]:
    """Platform, CPU count and accelerator names (CUDA devices when torch sees any)."""
    acc: list[str] = []
    try:
        import torch
        if torch.cuda.is_available():
            acc = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - provenance must never fail a report
        acc = []
    return {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "accelerators": acc}


def dataset_revisions(eval_dirs: Iterable[Path]) -> dict[str, str]:
    """``benchmark -> hf_id@revision (source)`` from the evaluation summaries under ``eval_dirs``."""
    out: dict[str, str] = {}
    for d in eval_dirs:
        for summary in sorted(Path(d).glob("*/summary.json")):
            try:
                s = json.loads(summary.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            bench = s.get("benchmark") or summary.parent.name
            rev = f"{s.get('hf_id') or '?'}@{s.get('revision') or '?'} ({s.get('source') or '?'}" + (
                f", split {s['split']}" if s.get("split") else "") + ")"
            prev = out.get(bench)
            out[bench] = rev if prev in (None, rev) else f"{prev} | {rev}"
    return out


def collect(run_dir: Path, *, stage_dirs: Iterable[str] = (), eval_dirs: Iterable[str] = (),
            files: Optional[dict[str, Path]] = None, eval_settings: Optional[dict[str, Any]] = None,
            code_revision: Optional[str] = None) -> dict[str, Any]:
    """The provenance of a report built from ``run_dir``: the code revision that built the report
    and, per stage, the revision(s) that trained it (``git_rev.txt``; a report rebuilt later by
    ``reproduce report`` says both), stage config hashes (``config.yaml`` of each stage dir), the
    evaluated datasets' revisions, hashes of ``files`` (recipe, published table)."""
    run_dir = Path(run_dir)
    if code_revision is None:
        from harness.run_dir import git_revision
        code_revision = git_revision()
    hashes: dict[str, Optional[str]] = {k: file_sha(p) for k, p in (files or {}).items()}
    if eval_settings is not None:
        hashes["eval_settings"] = sha(json.dumps(eval_settings, sort_keys=True))
    trained: dict[str, str] = {}
    for d in stage_dirs:
        hashes[str(d)] = file_sha(run_dir / d / "config.yaml")
        revs = (run_dir / d / "git_rev.txt").read_text().split() if (run_dir / d / "git_rev.txt").is_file() else []
        if revs:  # one line per training session whose code differed (a resumed run may span several)
            trained[str(d)] = " -> ".join(revs)
    return {"code_revision": code_revision, "training_revisions": trained, "config_hashes": hashes,
            "dataset_revisions": dataset_revisions(run_dir / d for d in eval_dirs),
            "packages": package_versions(), "hardware": hardware()}


def _flat(prov: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in prov.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                out[f"{k}.{kk}"] = vv
        else:
            out[k] = v
    return out


def provenance_differences(a: Optional[dict[str, Any]], b: Optional[dict[str, Any]]) -> list[str]:
    """Human-readable differences between two provenances (``section.key: a != b``); a report
    without provenance (older reports) is one difference."""
    if not a or not b:
        return [] if a == b else ["provenance missing in one report (written before provenance was recorded)"]
    fa, fb = _flat(a), _flat(b)
    diffs = []
    for k in sorted(fa.keys() | fb.keys()):
        if k.startswith("config_hashes.stages/") and (k not in fa or k not in fb):
            continue  # different tables train different stages: not a difference of the same thing
        if fa.get(k) != fb.get(k):
            diffs.append(f"{k}: {fa.get(k, '—')} != {fb.get(k, '—')}")
    return diffs


__all__ = ["PACKAGES", "collect", "dataset_revisions", "file_sha", "hardware", "package_versions",
           "provenance_differences", "sha"]
