"""Checkpoints: everything a run needs to continue bit-for-bit, written atomically and durably.

``checkpoints/step_N/`` holds ``model.safetensors`` (weights), ``optimizer.pt`` and
``scheduler.pt`` (state dicts, read back with ``torch.load(weights_only=True)``), ``rng_<rank>.pt``
(torch / CUDA / Python / NumPy generators of each rank) and ``state.json`` (step, data position,
world size, and ``files``: the size and CRC-32 of every other file under the directory, at any
depth, so sharded layouts such as DeepSpeed's ``global_step*/`` or torch.distributed.checkpoint's
``*.distcp`` are covered by the same check). Under a sharded strategy (``fsdp``, ``zero2``,
``zero3``) the weights and optimizer state are the engine's own files instead of
``model.safetensors`` / ``optimizer.pt``: ``dcp/`` (torch.distributed.checkpoint) or ``zero/``
(DeepSpeed), written and read by every rank (``Strategy.save_shards`` / ``load_shards``).

Writing: a checkpoint is built in a hidden temporary directory, every file and the directory are
fsynced, the directory is renamed into place and its parent fsynced, so a ``step_N`` directory
that exists is complete after a crash or a power cut. When the free space is less than a
checkpoint's size, older checkpoints are pruned *before* writing (never the newest valid one);
a write that still runs out of space is a one-line :class:`harness.errors.RunError` ("no space
left ...") and leaves no temporary directory behind.

Resuming: :func:`find_checkpoint` validates the newest checkpoint (``state.json`` readable, every
listed file present with its size and checksum) and falls back to the newest valid one, naming
each one it skipped and why.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import random
import re
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import safetensors.torch
import torch
from torch import nn

from harness.distributed import Strategy
from harness.durable import fsync_dir, fsync_tree
from harness.errors import RunError

logger = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step_(\d+)$")
STATE = "state.json"


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))


def _tuples(x: Any) -> Any:
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Checkpoint:
    path: Path
    step: int
    data: dict[str, Any]


# ---------------------------------------------------------------------------------- durable files
def _open_write(path: Path) -> BinaryIO:
    """Every checkpoint file is written through this (tests inject a full disk here)."""
    return open(path, "wb")


def _free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def _write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """``write(f)`` into ``path``, flushed and fsynced."""
    with _open_write(path) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _is_no_space(exc: BaseException | None) -> bool:
    """Did ``exc`` (or an exception it wraps: torch and safetensors wrap the OSError) come from a
    full device?"""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc) or "StorageFull" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _no_space(path: Path, what: str, need: int | None = None) -> RunError:
    try:
        free = f"{_free_bytes(path.parent if not path.exists() else path) / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    needs = f"; needs ~{need / 2**20:.1f} MiB" if need else ""
    return RunError(f"{path}: no space left on device while writing {what} ({free}{needs}); free some "
                    f"space or lower keep_checkpoints, then rerun to resume")


# ---------------------------------------------------------------------------------- manifest
def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix() != STATE)


def manifest(root: Path) -> dict[str, list[int]]:
    """``{relative path: [size, crc32]}`` of every file under ``root`` but ``state.json``, at any
    depth (sharded optimizer / model states included)."""
    return {p.relative_to(root).as_posix(): [p.stat().st_size, _crc32(p)] for p in _files(root)}


def write_state(root: Path, state: dict[str, Any]) -> None:
    """``root/state.json`` with ``state`` plus the manifest of every file already in ``root``:
    call it last, once all (sharded) files are written."""
    state = {**state, "files": manifest(root)}
    _write(root / STATE, lambda f: f.write(json.dumps(state, indent=1).encode()))


def validate_checkpoint(path: Path, *, checksums: bool = True) -> str | None:
    """Why the checkpoint directory ``path`` cannot be resumed from, or None when it can.

    ``state.json`` must be a readable JSON object with an integer ``step``; each file its manifest
    lists must exist with the listed size (and CRC-32 when ``checksums``). A checkpoint written
    before manifests existed (no ``files``) is accepted on its ``state.json`` alone.
    """
    state_path = path / STATE
    try:
        state = json.loads(state_path.read_text())
    except FileNotFoundError:
        return f"{state_path}: missing"
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return f"{state_path}: unreadable ({type(e).__name__}: {e})"
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        return f"{state_path}: no integer 'step'"
    files = state.get("files")
    if files is None:
        return None
    if not isinstance(files, dict):
        return f"{state_path}: 'files' is not a mapping"
    for rel, entry in files.items():
        f = path / rel
        try:
            size, crc = int(entry[0]), int(entry[1])
            actual = f.stat().st_size
        except FileNotFoundError:
            return f"{f}: missing"
        except (OSError, TypeError, ValueError, IndexError) as e:
            return f"{f}: unreadable entry ({e})"
        if actual != size:
            return f"{f}: {actual} bytes, {size} expected"
        if checksums and _crc32(f) != crc:
            return f"{f}: checksum mismatch"
    return None


# ---------------------------------------------------------------------------------- finding
def list_checkpoints(checkpoints: Path) -> list[tuple[int, Path]]:
    """``(step, directory)`` of every ``step_N`` directory, newest first."""
    if not checkpoints.is_dir():
        return []
    found = [(int(m.group(1)), d) for d in checkpoints.iterdir() if (m := _STEP_DIR.match(d.name)) and d.is_dir()]
    return sorted(found, reverse=True)


def find_checkpoint(checkpoints: Path) -> tuple[Checkpoint | None, list[tuple[Path, str]]]:
    """The newest valid checkpoint (or None) and the newer ones skipped, each with its reason."""
    skipped: list[tuple[Path, str]] = []
    for _, d in list_checkpoints(checkpoints):
        problem = validate_checkpoint(d)
        if problem is None:
            state = json.loads((d / STATE).read_text())
            return Checkpoint(path=d, step=int(state["step"]), data=state.get("data", {})), skipped
        skipped.append((d, problem))
    return None, skipped


def latest_checkpoint(checkpoints: Path) -> Checkpoint | None:
    """The highest-step *valid* checkpoint under ``checkpoints``, or None; each newer one that
    fails validation is named in a warning."""
    ckpt, skipped = find_checkpoint(checkpoints)
    for d, why in skipped:
        logger.warning("checkpoint %s is unusable (%s); trying an older one", d, why)
    return ckpt


def set_aside(bad: list[tuple[Path, str]]) -> list[Path]:
    """Rename unusable checkpoints to hidden ``.step_N.bad`` (kept for inspection, never resumed
    from nor counted by pruning); returns the new paths."""
    moved = []
    for d, _ in bad:
        target = d.with_name(f".{d.name}.bad")
        shutil.rmtree(target, ignore_errors=True)
        d.rename(target)
        moved.append(target)
    if moved:
        fsync_dir(moved[0].parent)
    return moved


# ---------------------------------------------------------------------------------- space
def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _estimate_bytes(checkpoints: Path, model: nn.Module) -> int:
    """The next checkpoint's size: the newest one's, else weights plus two Adam moments."""
    for _, d in list_checkpoints(checkpoints):
        if (d / STATE).is_file():
            return _tree_bytes(d)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return 3 * params + 2**20


def _remove_stale(checkpoints: Path) -> None:
    """Temporary directories left by a crashed write."""
    for d in checkpoints.iterdir():
        if d.name.startswith(".step_") and d.name.endswith(".tmp"):
            shutil.rmtree(d, ignore_errors=True)


def make_room(checkpoints: Path, need: int, *, keep_newest: int = 1) -> None:
    """Delete the oldest checkpoints (and set-aside ``.bad`` ones) until ``need`` bytes are free or
    only the newest ``keep_newest`` valid checkpoints are left (those are never deleted)."""
    if not checkpoints.is_dir() or _free_bytes(checkpoints) >= need:
        return
    for d in sorted(checkpoints.glob(".step_*.bad")):
        shutil.rmtree(d, ignore_errors=True)
    valid = [d for _, d in list_checkpoints(checkpoints) if validate_checkpoint(d, checksums=False) is None]
    protected = set(valid[:max(keep_newest, 1)])
    for _, d in reversed(list_checkpoints(checkpoints)):  # oldest first
        if _free_bytes(checkpoints) >= need:
            break
        if d not in protected:
            logger.warning("pruning %s early: %.1f MiB free, the next write needs ~%.1f MiB", d,
                           _free_bytes(checkpoints) / 2**20, need / 2**20)
            shutil.rmtree(d, ignore_errors=True)
    fsync_dir(checkpoints)


# ---------------------------------------------------------------------------------- saving
def _state_dict_bytes(model: nn.Module) -> bytes:
    """``safetensors.torch.save_model``'s file, as bytes (shared tensors stored once)."""
    state = model.state_dict()
    metadata: dict[str, str] = {}
    for kept, removed in safetensors.torch._remove_duplicate_names(state).items():
        for name in removed:
            metadata[name] = kept
            del state[name]
    state = {k: v.contiguous() for k, v in state.items()}
    return safetensors.torch.save(state, metadata=metadata or None)


def save_checkpoint(checkpoints: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, data_state: dict[str, Any], strategy: Strategy, keep: int = 2) -> Path:
    """Write ``checkpoints/step_<step>`` (collective: every rank calls it); keep the newest ``keep``.

    Space: when less than a checkpoint's size is free, older checkpoints go first (never the
    newest valid one); if the device still fills up, the write is retried once after pruning all
    but the newest, then fails with a one-line ``RunError``.
    """
    final = checkpoints / f"step_{step}"
    tmp = checkpoints / f".step_{step}.tmp"
    need = 0
    if strategy.is_main:
        checkpoints.mkdir(parents=True, exist_ok=True)
        _remove_stale(checkpoints)
        need = _estimate_bytes(checkpoints, model)
        make_room(checkpoints, need, keep_newest=max(1, keep - 1))
        tmp.mkdir()
    strategy.barrier()
    rng_file = tmp / f"rng_{strategy.rank}.pt"
    try:
        _write(rng_file, lambda f: torch.save(rng_state(), f))
    except BaseException as e:
        if _is_no_space(e):
            raise _no_space(rng_file, f"checkpoint step {step}") from e
        raise
    try:
        sharded = strategy.save_shards(tmp, model, optimizer)  # collective; False: plain files below
    except BaseException as e:
        if _is_no_space(e):
            raise _no_space(tmp, f"checkpoint step {step}") from e
        raise
    strategy.barrier()
    if strategy.is_main:
        main_files = ("scheduler.pt", STATE) if sharded else ("model.safetensors", "optimizer.pt", "scheduler.pt", STATE)
        for attempt in range(2):
            try:
                if not sharded:
                    _write(tmp / "model.safetensors", lambda f: f.write(_state_dict_bytes(model)))
                    _write(tmp / "optimizer.pt", lambda f: torch.save(optimizer.state_dict(), f))
                _write(tmp / "scheduler.pt", lambda f: torch.save(scheduler.state_dict(), f))
                write_state(tmp, {"step": step, "data": data_state, "world_size": strategy.world_size})
                break
            except BaseException as e:
                for name in main_files:
                    (tmp / name).unlink(missing_ok=True)
                if not _is_no_space(e):
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
                if attempt == 0 and len(list_checkpoints(checkpoints)) > 1:
                    make_room(checkpoints, 2**62, keep_newest=1)  # everything but the newest valid
                    continue
                shutil.rmtree(tmp, ignore_errors=True)
                raise _no_space(final, f"checkpoint step {step}", need) from e
        fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        fsync_dir(checkpoints)
        _prune(checkpoints, keep, final)
    strategy.barrier()
    return final


def load_checkpoint(ckpt: Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    strategy: Strategy) -> None:
    """Restore weights, optimizer, scheduler and this rank's RNG from ``ckpt``."""
    state = json.loads((ckpt.path / "state.json").read_text())
    if state.get("world_size", 1) != strategy.world_size:
        raise RunError(f"{ckpt.path}: saved with world size {state['world_size']}, now "
                           f"{strategy.world_size}; resume with the same number of processes")
    if not strategy.load_shards(ckpt.path, model, optimizer):
        missing, unexpected = safetensors.torch.load_model(model, str(ckpt.path / "model.safetensors"), strict=False,
                                                           device=str(next(model.parameters()).device))
        if missing or unexpected:
            raise RunError(f"{ckpt.path / 'model.safetensors'}: does not match the model "
                           f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
        optimizer.load_state_dict(torch.load(ckpt.path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(ckpt.path / "scheduler.pt", weights_only=True))
    set_rng_state(torch.load(ckpt.path / f"rng_{strategy.rank}.pt", weights_only=True))


def _prune(checkpoints: Path, keep: int, newest: Path) -> None:
    """Keep the ``keep`` highest-step checkpoints, and always ``newest`` (the one just written)."""
    steps = list_checkpoints(checkpoints)
    for _, d in steps[keep:] if keep > 0 else []:
        if d != newest:
            shutil.rmtree(d, ignore_errors=True)


def save_final(out: Path, model: nn.Module, tokenizer: Any = None, processor: Any = None,
               state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """``save_pretrained`` model (safetensors) + tokenizer + processor into ``out``, atomically and
    durably (files fsynced, directory renamed into place, parent fsynced). ``state_dict``: the
    full weights when the model itself is sharded (``Strategy.full_state_dict``)."""
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        for extra in (tokenizer, processor):
            if extra is not None:
                extra.save_pretrained(tmp)
        fsync_tree(tmp)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if _is_no_space(e):
            raise _no_space(out, "the final model") from e
        raise
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    fsync_dir(out.parent)
    return out
