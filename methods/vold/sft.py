"""VOLD stage 1: SFT of the student VLM on the teacher's traces (Eq. 4), vision tower frozen.

The training itself is methods.sft (cross-entropy on response tokens, Table 4 Stage 1 settings);
this module only supplies its data: the stage-0 traces, either given (``teacher`` is a traces
directory, e.g. a shared ``vold_traces`` stage) or generated first into ``<out>/traces`` (``teacher``
is a model). ``stop_at`` exports the state after N steps of the full schedule (App. B.1).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from harness.config import ConfigError
from methods.sft.config import SFTConfig
from methods.vold.config import TracesConfig, VOLDSFTConfig
from methods.vold.traces import generate_traces, is_traces_dir, read_manifest

EXPORTED = "EXPORTED"


def traces_for(cfg: VOLDSFTConfig, out_dir: Path, **trace_hooks: Any) -> Path:
    """The traces dataset this SFT run trains on (generated into ``out_dir/traces`` if needed)."""
    if is_traces_dir(cfg.teacher):
        made_from = read_manifest(cfg.teacher).get("prompts_from")
        if made_from not in (None, cfg.data):
            raise ConfigError(f"teacher: the traces in {cfg.teacher} were generated from the prompts of "
                              f"{made_from!r}, but data is {cfg.data!r}")
        return Path(cfg.teacher)
    sampling = {f.name: getattr(cfg.traces, f.name) for f in dataclasses.fields(cfg.traces)}
    tcfg = TracesConfig(**sampling, model=cfg.teacher, data=cfg.data, data_split=cfg.data_split,
                        data_limit=cfg.data_limit, seed=cfg.seed, dtype=cfg.dtype, device=cfg.device)
    return generate_traces(tcfg, out_dir / "traces", **trace_hooks)


def sft_config(cfg: VOLDSFTConfig, traces: Path) -> SFTConfig:
    """methods.sft's config: every SFT setting of ``cfg``, data = the traces (all of them)."""
    names = {f.name for f in dataclasses.fields(SFTConfig)}
    kw = {k: v for k, v in dataclasses.asdict(cfg).items() if k in names}
    kw.update(data=str(traces), data_split="train", data_limit=None)
    if cfg.stop_at is not None and cfg.stop_at < cfg.steps:
        kw["save_every"] = cfg.stop_at  # the exported state must be a checkpoint
    return SFTConfig(**kw)


def train_sft(cfg: VOLDSFTConfig, out_dir: str | Path, *, stop_after: int | None = None,
              trace_hooks: dict | None = None, **hooks: Any) -> Path | None:
    """Run (or resume) stage 0 if needed, then SFT into ``out_dir``; returns the final model dir."""
    from methods.sft.trainer import train as sft_train

    out = Path(out_dir)
    partial = cfg.stop_at is not None and cfg.stop_at < cfg.steps
    export = out / f"final_step_{cfg.stop_at}"
    if partial and (export / EXPORTED).is_file():
        return export
    traces = traces_for(cfg, out, **(trace_hooks or {}))
    scfg = sft_config(cfg, traces)
    limit = cfg.stop_at if partial else None
    if stop_after is not None:
        limit = stop_after if limit is None else min(limit, stop_after)
    final = sft_train(scfg, out, stop_after=limit, **hooks)
    if not partial or final is not None:
        return final
    ckpt = out / "checkpoints" / f"step_{cfg.stop_at}"
    if not (ckpt / "state.json").is_file():
        return None  # stopped earlier by stop_after; rerun to resume
    return _export_checkpoint(scfg, ckpt, export)


def _export_checkpoint(cfg: SFTConfig, ckpt: Path, export: Path) -> Path:
    """Write checkpoint ``ckpt``'s weights as a ``save_pretrained`` model directory."""
    import safetensors.torch

    from harness.checkpoint import save_final
    from harness.models import load_model, resolve_model_name

    bundle = load_model(resolve_model_name(cfg.model), dtype=cfg.dtype, device="cpu", trainable=True,
                        freeze_vision=cfg.freeze_vision)
    missing, unexpected = safetensors.torch.load_model(bundle.model, str(ckpt / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{ckpt}: weights do not match {cfg.model} (missing {sorted(missing)[:3]}, "
                           f"unexpected {sorted(unexpected)[:3]})")
    save_final(export, bundle.model, bundle.tokenizer, bundle.processor)
    (export / EXPORTED).write_text(f"{ckpt}\n")
    return export
