"""Pre-flight of the paper profile (reproduce.preflight): sources, GPUs, memory, disk, one line each."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from reproduce import preflight as pf
from reproduce.plan import build_plan
from reproduce.recipes import load_recipe

GIB = 1024 ** 3


@pytest.fixture()
def offline_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache and offline mode: nothing is found, nothing is asked."""
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def _vold_plan():
    return build_plan(load_recipe("vold"), ["table1"], "paper")


@settings(max_examples=60, deadline=None)
@given(p=st.integers(1, 10**11), t=st.integers(0, 10**11), n=st.integers(1, 64))
def test_sharding_never_costs_more_and_matches_deepspeeds_accounting(p, t, n):
    ddp, z2, z3 = (pf.state_bytes(p, t, s, n) for s in ("ddp", "zero2", "fsdp"))
    assert z3 <= z2 <= ddp
    assert ddp == 16 * p + 2 * t                       # nothing sharded
    assert abs(z2 - (2 * p + 14 * p / n + 2 * t)) < 1e-6 * ddp   # optimizer state + gradients sharded
    assert abs(z3 - (16 * p / n + 2 * t / n)) < 1e-6 * ddp      # the student's state and the teacher sharded
    assert pf.state_bytes(p, t, "zero3", 1) == ddp      # one rank: sharding saves nothing
    assert pf.state_bytes(p, t, "ddp", n, trains=False) == 2 * (p + t)


@pytest.mark.parametrize("strategy", ["zero3", "fsdp"])
def test_the_teacher_is_divided_by_the_world_size_only_when_it_is_sharded(strategy):
    """shard_frozen (the default) shards the frozen teacher like the student under zero3 / fsdp:
    a 3B student with an 8B teacher on 8 GPUs holds 16 * 3e9 / 8 + 2 * 8e9 / 8 bytes a GPU; with
    shard_frozen off (and under zero2, which shards no parameters) the whole teacher on each."""
    p, t, n = 3 * 10**9, 8 * 10**9, 8
    assert pf.state_bytes(p, t, strategy, n) == 16 * p / n + 2 * t / n
    assert pf.state_bytes(p, t, strategy, n, shard_frozen=False) == 16 * p / n + 2 * t
    assert pf.state_bytes(p, t, "zero2", n) == 2 * p + 14 * p / n + 2 * t


def test_param_count_reads_the_config_on_the_meta_device(tmp_path):
    from harness.models import load_model
    from harness.tiny import build_tiny_model

    path = tmp_path / "tiny"
    build_tiny_model("qwen2_5_vl", path, vocab="smoke")
    model = load_model(path).model
    assert pf.param_count(str(path)) == sum(p.numel() for p in model.parameters())
    assert pf.param_count(str(tmp_path / "absent")) is None


@pytest.mark.parametrize("hub_id,size", [
    ("Qwen/Qwen2.5-VL-3B-Instruct", 3e9), ("Qwen/Qwen2.5-VL-32B-Instruct", 32e9),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", 1.5e9), ("Qwen/Qwen3-8B", 8e9),
    ("Lin-Chen/MMStar", None), ("Qwen/Qwen2.5-VL-3B2", None)])
def test_nominal_size_is_read_from_the_name(hub_id, size):
    assert pf.nominal_params(hub_id) == (None if size is None else int(size))


def test_offline_paper_run_lists_every_missing_source_and_the_missing_gpu(offline_cache, tmp_path):
    plan = _vold_plan()
    problems = pf.preflight(plan, "table1", tmp_path / "run", gpus=[], count=lambda _: None, disk_free=10**15)
    needed = pf.needs(plan, "table1")
    ids = {n.id for n in needed}
    assert {"Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen3-8B", "open-r1/Mixture-of-Thoughts",
            "AI4Math/MathVista"} <= ids
    assert len(problems) == len(needed) + 1 and len(ids) == len(needed)
    assert all("\n" not in p for p in problems)
    assert problems[-1].startswith("no CUDA GPU visible")
    assert all("HF_HUB_OFFLINE" in p for p in problems[:-1])


def test_cached_sources_and_local_paths_pass(offline_cache, tmp_path):
    (offline_cache / "models--Qwen--Qwen3-8B").mkdir()
    hub = pf._Hub(timeout=1)
    assert pf.locate(pf.Need("model", "Qwen/Qwen3-8B", "x"), hub) is None
    assert pf.locate(pf.Need("model", str(tmp_path), "x"), hub) is None
    assert "no such local path" in pf.locate(pf.Need("model", str(tmp_path / "nope"), "x"), hub)
    assert pf.locate(pf.Need("dataset", "Qwen/Qwen3-8B", "x"), hub) is not None  # a model, not a data set


def test_an_unreachable_hub_is_asked_once(tmp_path, monkeypatch):
    from huggingface_hub import HfApi, constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    def down(self, repo_id, **kw):
        calls.append(repo_id)
        raise ConnectionError("no route to host")

    monkeypatch.setattr(HfApi, "model_info", down)
    monkeypatch.setattr(HfApi, "dataset_info", down)
    problems = pf.preflight(_vold_plan(), "table1", tmp_path / "run", gpus=[80 * GIB], count=lambda _: None,
                           disk_free=10**15)
    assert len(calls) == 1 and len(problems) == len(pf.needs(_vold_plan(), "table1"))
    assert "unreachable: ConnectionError" in problems[0]


def test_memory_and_disk_problems_name_the_stage_and_the_numbers(offline_cache, tmp_path, monkeypatch):
    monkeypatch.setattr(pf, "locate", lambda need, hub: None)
    sizes = {"Qwen/Qwen2.5-VL-3B-Instruct": 3_000_000_000, "Qwen/Qwen3-8B": 8_000_000_000}
    small = pf.preflight(_vold_plan(), "table1", tmp_path / "run", gpus=[40 * GIB], count=sizes.get,
                         disk_free=10**15)
    assert small and all(p.startswith("stage ") and "GiB a GPU" in p for p in small)
    assert any(p.startswith("stage vold_rl:") and "~59.6 GiB" in p and "under zero3 on 1 GPU" in p for p in small)
    # the recipe's strategy (scale: zero3) on 8 such GPUs: 3 B x 16 / 8 + 8 B x 2 = 20.5 GiB fits
    assert pf.preflight(_vold_plan(), "table1", tmp_path / "run", gpus=[40 * GIB] * 8, count=sizes.get,
                        disk_free=10**15) == []
    assert not any(p.startswith("stage mot_teacher_8b") for p in small)   # generation only: 14.9 GiB
    assert pf.preflight(_vold_plan(), "table1", tmp_path / "run", gpus=[141 * GIB], count=sizes.get,
                        disk_free=10**15) == []
    (disk,) = pf.preflight(_vold_plan(), "table1", tmp_path / "run", gpus=[141 * GIB], count=sizes.get,
                           disk_free=GIB)
    assert "needed for checkpoints" in disk and "1 GiB free" in disk


def test_preflight_counts_a_sharded_teacher_per_gpu(offline_cache, tmp_path, monkeypatch):
    """vold_rl (3B student, 8B teacher) under zero3 on 8 GPUs of 10 GiB: (48 + 16) GB / 8 = 7.5
    GiB a GPU fits; with shard_frozen off the whole teacher on each GPU, 6 + 16 GB = 20.5 GiB, does not."""
    monkeypatch.setattr(pf, "locate", lambda need, hub: None)
    sizes = {"Qwen/Qwen2.5-VL-3B-Instruct": 3_000_000_000, "Qwen/Qwen3-8B": 8_000_000_000}

    def problems(**overrides):
        plan = _vold_plan()
        for st in plan.stages.values():
            if st.id == "vold_rl":
                st.overrides.update(overrides)
        found = pf.preflight(plan, "table1", tmp_path / "run", gpus=[10 * GIB] * 8, count=sizes.get, disk_free=10**15)
        return [p for p in found if p.startswith("stage vold_rl:")]

    assert problems(distributed="zero3") == []
    (line,) = problems(distributed="zero3", shard_frozen=False)
    assert "~20.5 GiB a GPU under zero3 on 8 GPU(s)" in line


def test_dry_run_prints_the_memory_estimate():
    from reproduce import run_table

    text = run_table("vold", "table1", "paper", dry_run=True)["plan_text"]
    assert "Per-GPU model states" in text and "ZeRO-3/FSDP2 x8" in text and "vold_rl" in text
    assert "Published hardware: SFT on 32 A100 GPUs" in text
    assert "reproduce table1 --paper vold --profile paper --nproc-per-node 8 --nnodes 4" in text


def test_cli_stops_before_anything_starts(offline_cache, tmp_path):
    import os

    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_CACHE": str(offline_cache), "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, "-m", "reproduce.cli", "table1", "--paper", "vold", "--profile", "paper",
                        "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("reproduce: error:") and "pre-flight problem(s)" in lines[-1]
    assert all(line.startswith("reproduce: pre-flight: ") for line in lines[:-1]) and len(lines) > 5
    assert not out.exists()
