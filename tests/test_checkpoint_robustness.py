"""Regression tests of issue 17 (checkpoints): metrics after a crash before the first checkpoint,
a corrupted newest checkpoint, durability (fsync), a full disk (ENOSPC injected), and the
manifest that validates sharded layouts too. Runs are the SFT smoke profile (seconds each)."""
from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

import pytest

import harness.checkpoint as ckpt_mod
import harness.durable as durable
from harness.checkpoint import find_checkpoint, validate_checkpoint, write_state
from harness.errors import RunError
from methods.sft.config import PROFILES as SFT_PROFILES, SFTConfig
from methods.registry import load_method_config
from methods.sft.trainer import train as train_sft
from test_trainer_runs import assert_identical, metrics, without_times


def sft_cfg(**kw) -> SFTConfig:
    return load_method_config(SFTConfig, SFT_PROFILES, "smoke", overrides=kw)


def crash_at(monkeypatch, call: int):
    """Make the SFT step's ``call``-th encode raise (a crash in step ``call``)."""
    import methods.sft.trainer as sft_trainer
    real = sft_trainer.encode_sft
    calls = {"n": 0}

    def encode(ctx, samples):
        calls["n"] += 1
        if calls["n"] == call:
            raise RuntimeError("simulated crash")
        return real(ctx, samples)

    monkeypatch.setattr(sft_trainer, "encode_sft", encode)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted 6-step run every interrupted one must reproduce."""
    out = tmp_path_factory.mktemp("straight") / "run"
    train_sft(sft_cfg(steps=6, save_every=2), out)
    return out


def test_metrics_are_truncated_after_a_crash_before_the_first_checkpoint(tmp_path, monkeypatch, straight):
    cfg = sft_cfg(steps=6, save_every=2)
    with monkeypatch.context() as m:
        crash_at(m, 2)  # step 1 is logged, no checkpoint yet
        with pytest.raises(RuntimeError, match="simulated crash"):
            train_sft(cfg, tmp_path / "run")
    assert [r["step"] for r in metrics(tmp_path / "run")] == [1]
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())
    train_sft(cfg, tmp_path / "run")
    assert [r["step"] for r in metrics(tmp_path / "run")] == [1, 2, 3, 4, 5, 6]
    assert without_times(metrics(tmp_path / "run")) == without_times(metrics(straight))


def _corrupt(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "flip":  # same size, one byte of tensor data changed: only a checksum sees it
        data[-5] ^= 0xFF
        path.write_bytes(bytes(data))
    else:  # torn state.json
        path.write_text('{"step": 4, "da')


@pytest.mark.parametrize("target,how", [("model.safetensors", "truncate"), ("model.safetensors", "flip"),
                                        ("optimizer.pt", "flip"), ("state.json", "torn")])
def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog, straight, target, how):
    cfg = sft_cfg(steps=6, save_every=2)
    run = tmp_path / "run"
    assert train_sft(cfg, run, stop_after=4) is None
    newest = run / "checkpoints" / "step_4"
    _corrupt(newest / target, how)
    ckpt, skipped = find_checkpoint(run / "checkpoints")
    assert ckpt is not None and ckpt.step == 2
    assert [p for p, _ in skipped] == [newest] and target in skipped[0][1]
    with caplog.at_level(logging.WARNING):
        final = train_sft(cfg, run)
    assert any(str(newest) in r.getMessage() and target in r.getMessage() for r in caplog.records)
    assert_identical(straight / "final", final)
    assert [r["step"] for r in metrics(run)] == [1, 2, 3, 4, 5, 6]
    assert (run / "checkpoints" / ".step_4.bad").is_dir()  # set aside, not resumed from


def test_manifest_covers_sharded_layouts(tmp_path):
    """DeepSpeed ZeRO (global_stepN/ shards) and torch.distributed.checkpoint (*.distcp + .metadata)
    write several files per checkpoint, some in subdirectories: all are in the manifest."""
    d = tmp_path / "step_7"
    shards = ["global_step7/zero_pp_rank_0_mp_rank_00_optim_states.pt",
              "global_step7/zero_pp_rank_1_mp_rank_00_optim_states.pt",
              "global_step7/mp_rank_00_model_states.pt", "model/__0_0.distcp", "model/__1_0.distcp",
              "model/.metadata", "latest"]
    for i, rel in enumerate(shards):
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(os.urandom(100 + i))
    write_state(d, {"step": 7, "data": {}})
    assert set(json.loads((d / "state.json").read_text())["files"]) == set(shards)
    assert validate_checkpoint(d) is None
    shard = d / "model" / "__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[3] ^= 1
    shard.write_bytes(bytes(data))
    assert validate_checkpoint(d) == f"{shard}: checksum mismatch"
    shard.unlink()
    assert validate_checkpoint(d) == f"{shard}: missing"


def test_checkpoint_and_final_writes_are_fsynced(tmp_path, monkeypatch):
    """Every file of a checkpoint and of final/, the renamed directories and their parent are
    fsynced (tracked by inode: a rename keeps it)."""
    synced: set[int] = set()
    real_fsync = os.fsync

    def fsync(fd):
        synced.add(os.fstat(fd).st_ino)
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    run = tmp_path / "run"
    train_sft(sft_cfg(steps=2, save_every=2), run)
    step, final = run / "checkpoints" / "step_2", run / "final"
    paths = [step, final, run / "checkpoints", run] + [p for p in list(step.rglob("*")) + list(final.rglob("*"))]
    assert len(paths) > 8
    unsynced = [str(p) for p in paths if p.stat().st_ino not in synced]
    assert not unsynced


class FakeDisk:
    """A device of ``capacity`` bytes holding ``root``: free space is capacity minus what is under
    root; a write through ``harness.checkpoint._open_write`` that would overfill it raises ENOSPC."""

    def __init__(self, root: Path, capacity: int):
        self.root, self.capacity = root, capacity

    def used(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    def free(self, _path=None) -> int:
        return max(0, self.capacity - self.used())

    def open(self, path):
        disk, f = self, open(path, "wb")

        class Limited:
            def write(self, b):
                if len(b) > disk.free():
                    raise OSError(errno.ENOSPC, "No space left on device", str(path))
                return f.write(b)

            def __getattr__(self, name):
                return getattr(f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                f.close()

        return Limited()

    def install(self, monkeypatch):
        monkeypatch.setattr(ckpt_mod, "_free_bytes", self.free)
        monkeypatch.setattr(ckpt_mod, "_open_write", self.open)


def checkpoint_bytes(straight: Path) -> int:
    d = straight / "checkpoints" / "step_6"
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def test_full_disk_prunes_before_writing_and_the_run_finishes(tmp_path, monkeypatch, straight):
    """Room for 2.5 checkpoints with keep_checkpoints=2: writing the third before pruning (old
    behaviour) cannot fit; pruning first does, and the result is the uninterrupted run's."""
    run = tmp_path / "run"
    run.mkdir()
    disk = FakeDisk(run, int(2.5 * checkpoint_bytes(straight)) + 100_000)  # + config, metrics
    disk.install(monkeypatch)
    final = train_sft(sft_cfg(steps=6, save_every=1, keep_checkpoints=2), run)
    assert_identical(straight / "final", final)
    assert [d.name for d in sorted((run / "checkpoints").iterdir())] == ["step_6"] or \
        "step_6" in {d.name for d in (run / "checkpoints").iterdir()}
    assert not list((run / "checkpoints").glob(".*.tmp"))


def test_no_space_for_one_checkpoint_is_one_line_and_leaves_no_tmp(tmp_path, monkeypatch, straight):
    run = tmp_path / "run"
    run.mkdir()
    FakeDisk(run, checkpoint_bytes(straight) // 2).install(monkeypatch)
    with pytest.raises(RunError) as err:
        train_sft(sft_cfg(steps=2, save_every=1), run)
    msg = str(err.value)
    assert "no space left" in msg and "\n" not in msg and str(run / "checkpoints") in msg
    assert not list((run / "checkpoints").glob(".*.tmp"))
    # space freed: the rerun goes on
    monkeypatch.undo()
    assert train_sft(sft_cfg(steps=2, save_every=1), run) is not None


def test_prune_never_removes_the_newest_valid_checkpoint(tmp_path, monkeypatch, straight):
    run = tmp_path / "run"
    assert train_sft(sft_cfg(steps=6, save_every=1, keep_checkpoints=3), run, stop_after=3) is None
    FakeDisk(run, 0).install(monkeypatch)  # nothing free: pruning goes as far as it may
    ckpt_mod.make_room(run / "checkpoints", 10**9)
    assert [d.name for d in (run / "checkpoints").iterdir() if d.name.startswith("step_")] == ["step_3"]


def test_atomic_write_text_fsyncs_the_directory(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd))[1])
    durable.atomic_write_text(tmp_path / "a.json", "{}")
    assert str(tmp_path) in synced
