"""VOLD (arXiv 2510.23497): reasoning transfer from a text-only teacher LLM to a VLM student.

Three stages, each a ``train(overrides, out_dir, profile) -> Path`` for methods.registry:
``train_traces`` (stage 0, returns the traces dataset dir), ``train_sft`` (stage 1, SFT on the
traces) and ``train_rl`` (stage 2, GRPO + reward-masked teacher distillation). CLI:
``python -m methods.vold --profile smoke --stage traces|sft|rl|all --out DIR [key=value ...]``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from methods.vold.config import CONFIGS, PROFILES, STAGES, TracesConfig, VOLDConfig, VOLDSFTConfig
from harness.errors import UnknownNameError

__all__ = ["CONFIGS", "PROFILES", "STAGES", "TracesConfig", "VOLDConfig", "VOLDSFTConfig", "load_stage_config",
           "run_stage", "train_traces", "train_sft", "train_rl"]


def load_stage_config(stage: str, profile: str = "smoke", overrides: dict[str, Any] | None = None,
                      config_file: str | Path | None = None) -> Any:
    """The config of ``stage`` from its profile's defaults, a YAML file and overrides (validated)."""
    from methods.registry import load_method_config

    if stage not in STAGES:
        raise UnknownNameError(f"unknown VOLD stage {stage!r}; known: {', '.join(STAGES)}")
    return load_method_config(CONFIGS[stage], PROFILES[stage], profile, config_file, overrides)


def run_stage(stage: str, cfg: Any, out_dir: str | Path, *, stop_after: int | None = None,
              validator: Any = None) -> Path | None:
    """Run (or resume) one stage with a ready config; returns its output directory. ``validator``
    (a harness.validation.ValidatorFactory) is used by the RL stage only (Geo3K curves, §4.1)."""
    if stage == "traces":
        from methods.vold.traces import generate_traces
        return generate_traces(cfg, out_dir)
    if stage == "sft":
        from methods.vold.sft import train_sft as _sft
        return _sft(cfg, out_dir, stop_after=stop_after)
    from methods.vold.trainer import train
    return train(cfg, out_dir, stop_after=stop_after, validator=validator)


def _registry_fn(stage: str):
    def train(overrides: dict, out_dir: Path, profile: str = "smoke", *, validator: Any = None) -> Path:
        final = run_stage(stage, load_stage_config(stage, profile, overrides), Path(out_dir), validator=validator)
        assert final is not None
        return final

    train.__name__ = f"train_{stage}"
    train.__doc__ = (f"VOLD {stage} stage for methods.registry: (overrides, out_dir, profile, *, validator=None) "
                     "-> output dir (``validator``: harness.validation.ValidatorFactory, RL stage only).")
    return train


train_traces = _registry_fn("traces")
train_sft = _registry_fn("sft")
train_rl = _registry_fn("rl")
