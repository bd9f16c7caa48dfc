"""vLLM's knobs from a config (harness.train_config.VLLMSettings) reach the engine, and sleep mode
frees its memory exactly around the update. The engine is a stand-in here (vLLM itself is
exercised by tests/test_rollout_vllm.py where it is installed)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

import harness.rollout.vllm as vllm_mod
import harness.trainer as trainer_mod
from harness.errors import ConfigError
from harness.rollout.hf import HFRolloutEngine
from harness.train_config import VLLMSettings

STEPS = dict(steps=2, save_every=2, prompts_per_step=2, num_generations=2, max_new_tokens=4, mini_batches_per_step=1)


def _grpo(tmp_path, **over):
    from methods.grpo.config import PROFILES, GRPOConfig
    from methods.grpo.trainer import train
    from methods.registry import load_method_config

    cfg = load_method_config(GRPOConfig, PROFILES, "smoke", overrides=STEPS | over)
    return cfg, lambda: train(cfg, tmp_path / "run")


@pytest.mark.parametrize("key,value", [("gpu_memory_utilization", 1.5), ("gpu_memory_utilization", 0.0),
                                       ("tensor_parallel_size", 0), ("max_model_len", 0)])
def test_bad_vllm_settings_are_one_line_errors(tmp_path, key, value):
    with pytest.raises((ConfigError, ValueError), match=f"vllm.{key}"):
        _grpo(tmp_path, vllm={key: value})


def test_sleep_mode_needs_cuda():
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine may use sleep mode")
    with pytest.raises(ConfigError, match="sleep_mode needs CUDA"):
        vllm_mod.VLLMRolloutEngine("any", sleep_mode=True)


def test_settings_reach_the_engine_and_sleep_wraps_each_update(tmp_path, monkeypatch):
    events: list[str] = []
    made: dict = {}

    class StandIn(HFRolloutEngine):
        """vLLM stand-in: transformers generate on its own copy of the checkpoint."""

        def __init__(self, path, **kw):
            from harness.models import load_model
            made.update(kw)
            super().__init__(load_model(path, trainable=False), progress=False)

        def sync_weights(self, model):
            events.append("sync")

        def generate(self, samples, sampling):
            events.append("generate")
            return super().generate(samples, sampling)

        def sleep(self):
            events.append("sleep")

        def wake_up(self):
            events.append("wake")

    real_update = trainer_mod.accumulate_update

    def update(*a, **k):
        events.append("update")
        return real_update(*a, **k)

    monkeypatch.setattr(vllm_mod, "VLLMRolloutEngine", StandIn)
    monkeypatch.setattr(trainer_mod, "accumulate_update", update)
    settings = {"gpu_memory_utilization": 0.35, "tensor_parallel_size": 2, "max_model_len": 4096,
                "enforce_eager": True, "sleep_mode": True}
    cfg, run = _grpo(tmp_path, rollout_engine="vllm", vllm=settings)
    assert isinstance(cfg.vllm, VLLMSettings) and cfg.vllm.tensor_parallel_size == 2
    assert run() is not None
    assert {k: made[k] for k in settings} == settings and made["dtype"] == cfg.dtype
    assert events == ["wake", "sync", "generate", "sleep", "update"] * 2


def test_traces_engine_gets_the_settings(monkeypatch):
    from methods.vold.config import TracesConfig
    from methods.vold.traces import _default_engine

    made = {}
    monkeypatch.setattr(vllm_mod, "VLLMRolloutEngine", lambda path, **kw: made.update(kw, path=path) or "engine")
    cfg = TracesConfig(model="org/teacher", engine="vllm", vllm=VLLMSettings(gpu_memory_utilization=0.9,
                                                                            tensor_parallel_size=4))
    assert _default_engine(cfg) == "engine"
    assert made["gpu_memory_utilization"] == 0.9 and made["tensor_parallel_size"] == 4 and made["path"] == "org/teacher"


def test_evals_vllm_engine_takes_dtype_and_settings(monkeypatch, tmp_path):
    """``evals run --engine vllm`` passes --dtype (default bfloat16) and the vLLM settings to the
    engine, refuses a device index (vLLM picks its GPUs), and the vLLM flags need --engine vllm."""
    from evals import cli
    from evals.runner import make_engine

    made = {}

    class Stop(Exception):
        pass

    def fake(path, **kw):
        made.update(kw)
        raise Stop

    monkeypatch.setattr(vllm_mod, "VLLMRolloutEngine", fake)
    with pytest.raises(Stop):
        make_engine("smoke:qwen3", "vllm", dtype="float16", vllm=VLLMSettings(tensor_parallel_size=2))
    assert made["dtype"] == "float16" and made["tensor_parallel_size"] == 2
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES"):
        make_engine("smoke:qwen3", "vllm", device="cuda:1")
    made.clear()
    with pytest.raises(Stop):
        cli.main(["run", "--model", "smoke:qwen3", "--benchmarks", "mathvista", "--source", "smoke", "--engine",
                  "vllm", "--gpu-memory-utilization", "0.3", "--max-model-len", "512", "--out", str(tmp_path),
                  "--no-progress", "--device", "cpu"])
    assert made["dtype"] == "bfloat16" and made["gpu_memory_utilization"] == 0.3 and made["max_model_len"] == 512
    assert cli.main(["run", "--model", "smoke:qwen3", "--benchmarks", "mathvista", "--gpu-memory-utilization",
                     "0.3", "--out", str(tmp_path)]) == 2
