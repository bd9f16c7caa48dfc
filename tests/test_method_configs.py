"""Method configs: generic methods have neutral defaults, VOLD states its own recipe.

``tests/data/vold_configs.json`` holds every VOLD config as resolved before the generic defaults
(TrainConfig, OnlineConfig, GRPOConfig, SFTConfig) stopped being VOLD's numbers: the three stage
configs of ``methods.vold`` in both profiles, and every stage of ``reproduce/papers/vold.yaml`` as
the runner resolves it (model and teacher replaced by placeholders). They must stay equal field by
field.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from harness.config import ConfigError
from methods.registry import load_method_config
from methods.vold import load_stage_config
from reproduce.recipes import load_recipe

SNAPSHOT = json.loads((Path(__file__).parent / "data" / "vold_configs.json").read_text())


def _generic(package: str, cls: str) -> Callable[[str, dict], Any]:
    import importlib

    mod = importlib.import_module(f"methods.{package}.config")
    return lambda profile, ov: load_method_config(getattr(mod, cls), mod.PROFILES, profile, None, ov)


RESOLVE: dict[str, Callable[[str, dict], Any]] = {
    "sft": _generic("sft", "SFTConfig"),
    "grpo": _generic("grpo", "GRPOConfig"),
    "opd": _generic("opd", "OPDConfig"),
    "vold_traces": lambda p, ov: load_stage_config("traces", p, ov),
    "vold_sft": lambda p, ov: load_stage_config("sft", p, ov),
    "vold": lambda p, ov: load_stage_config("rl", p, ov),
}


def resolved_vold_configs() -> dict[str, dict]:
    out = {}
    for method in ("vold_traces", "vold_sft", "vold"):
        for profile in ("paper", "smoke"):
            out[f"cli/{method}/{profile}"] = dataclasses.asdict(RESOLVE[method](profile, {}))
    for stage in load_recipe("vold").stages:
        for profile in ("paper", "smoke"):
            ov = dict(stage.overrides(profile), model="M")
            if stage.data_for(profile):
                ov["data"] = stage.data_for(profile)
            if stage.teacher:
                ov["teacher"] = "T"
            out[f"vold/{stage.id}/{profile}"] = dataclasses.asdict(RESOLVE[stage.method](profile, ov))
    return out


# Deliberate changes of a shared default since the snapshot: (before, now) per field.
def _paper_engine(before: Any, now: Any, key: str) -> bool:
    """The paper profile's engine became vLLM (harness.train_config.PAPER_ROLLOUTS / PAPER_TRACES)."""
    return key.endswith("/paper") and (before, now) == ("hf", "vllm")


def _paper_vllm(before: Any, now: Any, key: str) -> bool:
    """Paper-profile rollouts: vLLM colocated, asleep during updates (PAPER_ROLLOUTS); nothing else."""
    return key.endswith("/paper") and now == {**before, "sleep_mode": True}


def _traces_engine(before: Any, now: Any, key: str) -> bool:
    """``engine`` / ``vllm`` moved into TraceSampling, so VOLD's SFT can generate its traces with vLLM
    (the paper profile's engine); the sampling settings themselves are unchanged."""
    added = {k: now[k] for k in now if k not in before}
    return ({k: now[k] for k in before} == before and set(added) == {"engine", "vllm"}
            and added["engine"] == ("vllm" if key.endswith("/paper") else "hf"))


# Deliberate changes since the snapshot: field -> (before, now, snapshot key) -> expected?
# recompute_old_logp: "auto" recomputes for every engine but the HF engine on the trained model
# itself, whose old log-probs are the same quantity (docs/design.md, issue 18).
CHANGED_ON_PURPOSE: dict[str, Callable[[Any, Any, str], bool]] = {
    "recompute_old_logp": lambda before, now, key: (before, now) == (True, "auto"),
    "rollout_engine": _paper_engine,
    "engine": _paper_engine,
    "vllm": _paper_vllm,
    "traces": _traces_engine,
    # shard_frozen: new run-management field (issue 15); it changes placement under fsdp / zero3 only,
    # not the math (docs/scale_out.md).
    "shard_frozen": lambda before, now, key: (before, now) == (None, True),
    # smoke RL learning rate 1e-3 -> 3e-5 (smoke version v4, issue 11): at 1e-3 the smoke RL stage
    # erased what a smoke SFT stage had taught (docs/smoke_profile.md); the paper profile is untouched.
    "lr": lambda before, now, key: key.endswith("/smoke") and (before, now) == (1e-3, 3e-5),
}


# Whole recipe stages changed on purpose: snapshot key -> {field: (before, now)}.
STAGES_CHANGED_ON_PURPOSE: dict[str, dict[str, tuple[Any, Any]]] = {
    # smoke version v4 (issue 11): X-Reasoner's smoke SFT learns colour naming on easy-vqa colour
    # questions (docs/smoke_profile.md, "What a smoke table can show")
    "vold/sft_mot/smoke": {"data": ("smoke-text-math", "easy-vqa-color"), "data_limit": (32, 800),
                           "steps": (16, 80), "batch_size": (4, 16), "micro_batch_size": (2, 16),
                           "max_length": (48, 96), "save_every": (2, 20)},
}


def test_vold_configs_are_unchanged_field_by_field() -> None:
    now = json.loads(json.dumps(resolved_vold_configs(), default=str))
    assert sorted(now) == sorted(SNAPSHOT)
    for key, before in SNAPSHOT.items():
        changed = {f: (before.get(f), now[key].get(f)) for f in set(before) | set(now[key])
                   if before.get(f) != now[key].get(f)
                   and not (f in CHANGED_ON_PURPOSE and CHANGED_ON_PURPOSE[f](before.get(f), now[key].get(f), key))
                   and STAGES_CHANGED_ON_PURPOSE.get(key, {}).get(f) != (before.get(f), now[key].get(f))}
        assert not changed, f"{key}: {changed}"


@pytest.mark.parametrize("package,cls", [("grpo", "GRPOConfig"), ("sft", "SFTConfig")])
def test_generic_methods_need_model_and_data(package: str, cls: str) -> None:
    resolve = _generic(package, cls)
    with pytest.raises(ConfigError, match="model: required"):
        resolve("paper", {"data": "smoke-learnable"})
    with pytest.raises(ConfigError, match="data: required"):
        resolve("paper", {"model": "smoke:qwen3"})


def test_generic_defaults_are_not_volds() -> None:
    """The neutral defaults differ from VOLD's Table 4 where VOLD departs from the libraries."""
    grpo = _generic("grpo", "GRPOConfig")("paper", {"model": "m", "data": "d"})
    vold = load_stage_config("rl", "paper")
    assert (grpo.clip_high, grpo.freeze_vision, grpo.reward) == (0.2, False, "math")
    assert (vold.clip_high, vold.freeze_vision, vold.reward) == (0.3, True, "boxed-exact")
