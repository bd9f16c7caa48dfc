"""Which revision of a data set a run used: the requested pin and the commit it resolved to.

Hub data sets resolve through the local Hugging Face cache (``refs/<branch>`` holds the commit a
branch pointed to when it was downloaded); packaged sets are identified by their package version;
generated smoke sets by the generator. Evaluation (``evals``) and training runs record the same
fields, so a report can say which revision every number came from.
"""
from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any


def is_commit(revision: str | None) -> bool:
    """True for a full 40-hex-digit commit id (a real pin), False for a branch or tag name."""
    return bool(revision) and len(revision) == 40 and all(c in "0123456789abcdef" for c in revision)


def resolved_revision(hub_id: str | None, revision: str | None) -> str | None:
    """The commit ``hub_id`` at ``revision`` (default ``main``) resolves to: the pin itself, else the
    commit the local Hugging Face cache holds for that branch, else None (never downloaded)."""
    revision = revision or "main"
    if is_commit(revision):
        return revision
    if not hub_id:
        return None
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        ref = Path(HF_HUB_CACHE) / f"datasets--{hub_id.replace('/', '--')}" / "refs" / revision
        sha = ref.read_text(encoding="utf-8").strip() if ref.is_file() else ""
    except (ImportError, OSError):
        return None
    return sha if is_commit(sha) else None


def training_set_provenance(name_or_path: str, revision: str | None = None) -> dict[str, Any]:
    """``{"data", "source", "revision", "revision_sha"}`` for a name :func:`load_training_set`
    accepts: generated smoke sets, packaged sets (package and version), registered hub sets (their
    pin or ``main``), local paths, and other hub ids."""
    from harness.data.registry import PACKAGE_OF, SMOKE_SETS
    from harness.data.training_sets import TRAINING_SETS

    key = str(name_or_path)
    if key in SMOKE_SETS:
        return {"data": key, "source": "generated (harness.data.synthetic)", "revision": None, "revision_sha": None}
    if key in PACKAGE_OF:
        package = PACKAGE_OF[key]
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            version = None
        return {"data": key, "source": f"package {package}", "revision": version, "revision_sha": None}
    if key in TRAINING_SETS:
        spec = TRAINING_SETS[key]
        rev = revision or spec.revision or "main"
        return {"data": key, "source": spec.hub_id, "revision": rev, "revision_sha": resolved_revision(spec.hub_id, rev)}
    if Path(key).exists():
        return {"data": key, "source": "local path", "revision": None, "revision_sha": None}
    rev = revision or "main"
    return {"data": key, "source": key, "revision": rev, "revision_sha": resolved_revision(key, rev)}
