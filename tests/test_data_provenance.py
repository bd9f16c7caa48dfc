"""Which revision of a training set a run read: harness.data.provenance and the run's data.json."""
from __future__ import annotations

import json
from dataclasses import dataclass

import huggingface_hub.constants

from harness.data.provenance import resolved_revision, training_set_provenance
from harness.data.training_sets import TRAINING_SETS
from harness.run_dir import RunDir

SHA = "0123456789abcdef0123456789abcdef01234567"


def _fake_cache(tmp_path, monkeypatch, hub_id: str, branch: str = "main", sha: str = SHA) -> None:
    ref = tmp_path / f"datasets--{hub_id.replace('/', '--')}" / "refs" / branch
    ref.parent.mkdir(parents=True)
    ref.write_text(sha + "\n")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))


def test_a_pin_is_its_own_commit_and_a_branch_resolves_through_the_cache(tmp_path, monkeypatch):
    assert resolved_revision("any/set", SHA) == SHA
    assert resolved_revision("any/set", "main") is None  # never downloaded
    _fake_cache(tmp_path, monkeypatch, "any/set")
    assert resolved_revision("any/set", "main") == SHA
    assert resolved_revision("any/set", "v2") is None  # another branch: not in the cache


def test_registered_hub_set_records_hub_id_branch_and_commit(tmp_path, monkeypatch):
    spec = TRAINING_SETS["orz-57k"]
    _fake_cache(tmp_path, monkeypatch, spec.hub_id, spec.revision or "main")
    rec = training_set_provenance("orz-57k")
    assert rec == {"data": "orz-57k", "source": spec.hub_id, "revision": spec.revision or "main", "revision_sha": SHA}


def test_packaged_generated_and_local_sets(tmp_path):
    assert training_set_provenance("easy-vqa")["revision"] == "1.0"  # the pinned easy-vqa package
    assert training_set_provenance("champ") == {"data": "champ", "source": "package champ-dataset",
                                                "revision": "1.0.0", "revision_sha": None}
    assert training_set_provenance("smoke-text-math")["source"].startswith("generated")
    assert training_set_provenance(str(tmp_path))["source"] == "local path"


@dataclass
class _Cfg:
    data: str = "champ"
    data_split: str = "train"
    data_limit: int | None = 8


def test_a_run_directory_records_its_training_set(tmp_path):
    run = RunDir(tmp_path / "run")
    run.start(_Cfg())
    rec = json.loads((tmp_path / "run" / "data.json").read_text())
    assert rec["data"] == "champ" and rec["revision"] == "1.0.0" and rec["split"] == "train" and rec["limit"] == 8
