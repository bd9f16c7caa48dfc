"""A run's own directory: resolved config, git revision, metrics, checkpoints, completion marker.

Layout::

    <out>/config.yaml            the resolved config (profile ⊕ file ⊕ overrides)
    <out>/git_rev.txt            commit of the code that ran (``-dirty`` when the tree had edits)
    <out>/metrics.jsonl          one JSON object a step
    <out>/checkpoints/step_N/    see harness.checkpoint
    <out>/final/                 save_pretrained model (loadable with harness.models.load_model)
    <out>/COMPLETE               written last, atomically: only a finished run has it

A rerun on the same directory resumes from the latest complete checkpoint; a rerun of a complete
run does nothing. A rerun with a different config is refused (the directory belongs to one run).
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from harness.config import ConfigError, to_dict
from harness.durable import atomic_write_text
from harness.jsonl import append_jsonl, read_jsonl

COMPLETE = "COMPLETE"


def git_revision(repo: Path | None = None) -> str:
    """``<sha>`` or ``<sha>-dirty`` of the repository holding this code; ``unknown`` without git."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


NOT_IDENTITY = ("report_to",)
"""Config fields that do not change what a run computes: a resumed run may differ in them."""


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            out += _diff(a.get(k, "<absent>"), b.get(k, "<absent>"), key)
        return out
    return [] if a == b else [f"{prefix}: saved {a!r}, now {b!r}"]


def require_directory(path: str | Path, what: str = "output directory") -> Path:
    """``path`` as a Path, refused (one-line ``ConfigError``) when it exists and is not a directory."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path}: the {what} is a file, not a directory")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{parent}: not a directory (in the {what} {path})")
            break
    return path


class RunDir:
    """One run's directory. Only the main rank writes; every rank may read."""

    def __init__(self, path: str | Path):
        self.path = require_directory(path, "run directory")

    # ---- layout
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def final(self) -> Path:
        return self.path / "final"

    def is_complete(self) -> bool:
        return (self.path / COMPLETE).is_file()

    # ---- lifecycle
    def check_config(self, cfg: Any) -> None:
        """Refuse a directory created by a run with a different config."""
        if not self.config_path.is_file():
            return
        saved = yaml.safe_load(self.config_path.read_text()) or {}
        now = yaml.safe_load(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        for key in NOT_IDENTITY:
            saved.pop(key, None)
            now.pop(key, None)
        diffs = _diff(saved, now)
        if diffs:
            raise ConfigError(
                f"{self.config_path}: this run directory was created with a different config "
                f"({'; '.join(diffs[:5])}). Use a new output directory, or rerun with the same config to resume.")

    def start(self, cfg: Any) -> None:
        """Create the directory, write the resolved config and the training set's provenance
        (``data.json``; first run only) and the git revision."""
        self.check_config(cfg)
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.config_path.is_file():
            atomic_write_text(self.config_path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
        rev = git_revision()
        rev_file = self.path / "git_rev.txt"
        previous = rev_file.read_text().splitlines() if rev_file.is_file() else []
        if not previous or previous[-1] != rev:  # one line a (resumed) session whose code differs
            atomic_write_text(rev_file, "\n".join(previous + [rev]) + "\n")
        data = getattr(cfg, "data", "")
        data_file = self.path / "data.json"
        if data and not data_file.is_file():  # which revision of the training set this run read
            from harness.data.provenance import training_set_provenance

            record = {**training_set_provenance(data),
                      "split": getattr(cfg, "data_split", None), "limit": getattr(cfg, "data_limit", None)}
            atomic_write_text(data_file, json.dumps(record, indent=1) + "\n")

    def mark_complete(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.path / COMPLETE, json.dumps(summary, indent=1) + "\n")

    # ---- metrics
    def log(self, record: dict[str, Any]) -> None:
        append_jsonl(self.metrics_path, record, default=float)

    def truncate_metrics(self, after_step: int) -> None:
        """Drop records logged after ``after_step`` (a crash after the last checkpoint); resuming
        logs them again."""
        if not self.metrics_path.is_file():
            return
        keep = [rec for rec in read_jsonl(self.metrics_path, torn_tail=True)  # a crash may cut the last line
                if int(rec.get("step", 0)) <= after_step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(rec, default=float, ensure_ascii=False) + "\n"
                                                         for rec in keep))

    def read_metrics(self) -> list[dict[str, Any]]:
        """The step records; a last line cut by a crash is left out."""
        return read_jsonl(self.metrics_path, torn_tail=True, missing_ok=True)
