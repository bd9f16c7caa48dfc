"""End-to-end trainer runs on the smoke profile (tiny random Qwen2.5-VL, CPU): resume is exact,
GRPO learns a learnable reward, SFT lowers its loss, a finished run is not redone, a crashed run
never looks complete."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch

from harness.config import ConfigError
from harness.run_dir import COMPLETE
from methods.grpo.config import PROFILES as GRPO_PROFILES, GRPOConfig
from methods.grpo.trainer import train as train_grpo
from methods.registry import load_method_config
from methods.sft.config import PROFILES as SFT_PROFILES, SFTConfig
from methods.sft.trainer import train as train_sft

REPO = Path(__file__).resolve().parents[1]


def grpo_cfg(**kw) -> GRPOConfig:
    return load_method_config(GRPOConfig, GRPO_PROFILES, "smoke", overrides=kw)


def sft_cfg(**kw) -> SFTConfig:
    return load_method_config(SFTConfig, SFT_PROFILES, "smoke", overrides=kw)


def weights(final: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(final / "model.safetensors"))


def assert_identical(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    changed = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not changed, f"weights differ: {changed[:3]}"


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def without_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time")} for r in rows]


def test_grpo_resume_gives_identical_weights(tmp_path):
    cfg = grpo_cfg(steps=6, save_every=3)
    straight = train_grpo(cfg, tmp_path / "straight")
    assert train_grpo(cfg, tmp_path / "split", stop_after=3) is None
    split = tmp_path / "split"
    assert not (split / COMPLETE).exists() and (split / "checkpoints" / "step_3" / "state.json").is_file()
    resumed = train_grpo(cfg, split)
    assert (split / COMPLETE).is_file()
    assert_identical(straight, resumed)
    assert without_times(metrics(tmp_path / "straight")) == without_times(metrics(split))
    # the initial weights did change (the comparison above is not vacuous)
    from harness.models import smoke_model_path
    init = safetensors.torch.load_file(str(next(Path(smoke_model_path("qwen2_5_vl")).glob("*.safetensors"))))
    w = weights(straight)
    assert any(not torch.equal(init[k], w[k]) for k in w if k in init and "visual" not in k)
    assert all(torch.equal(init[k], w[k]) for k in w if k in init and "visual" in k)  # frozen tower


def test_crashed_run_is_not_complete_and_resumes_exactly(tmp_path, monkeypatch):
    """A crash in step 5 leaves checkpoints up to step 4 and no COMPLETE; the rerun resumes from
    step 4, drops the metrics logged after it, and ends with the straight run's weights."""
    cfg = sft_cfg(steps=6, save_every=2)
    straight = train_sft(cfg, tmp_path / "straight")

    calls = {"n": 0}
    import methods.sft.trainer as sft_trainer
    real_encode = sft_trainer.encode_sft

    def crashing_encode(ctx, samples):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("simulated crash")
        return real_encode(ctx, samples)

    with monkeypatch.context() as m:
        m.setattr(sft_trainer, "encode_sft", crashing_encode)
        with pytest.raises(RuntimeError, match="simulated crash"):
            train_sft(cfg, tmp_path / "crash")
    crash = tmp_path / "crash"
    assert not (crash / COMPLETE).exists() and not (crash / "final").exists()
    assert [r["step"] for r in metrics(crash)] == [1, 2, 3, 4]
    resumed = train_sft(cfg, crash)
    assert_identical(straight, resumed)
    assert without_times(metrics(crash)) == without_times(metrics(tmp_path / "straight"))


def test_grpo_smoke_raises_the_mean_reward(tmp_path):
    """Fixed seed, smoke profile (12 steps, reward = fraction of even token ids). Measured: the
    mean reward of the first 3 steps is 0.49 and of the last 3 0.92; the test asks for a gain
    of at least 0.25. The clip is active in some update (ratio != 1 is exercised)."""
    final = train_grpo(grpo_cfg(), tmp_path / "run")
    rows = metrics(tmp_path / "run")
    rewards = [r["reward_mean"] for r in rows]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last - first >= 0.25, rewards
    assert max(r["pg_clipfrac"] for r in rows) > 0
    assert (final / "config.json").is_file()
    from harness.models import load_model
    assert load_model(final).is_vlm


def test_sft_smoke_lowers_the_loss(tmp_path):
    """Measured on the smoke profile: token NLL from 7.08 (≈ ln 1160, the vocabulary size) to a
    mean of 4.36 over the last 2 of 16 steps; the test asks for a drop of at least 2 nats."""
    train_sft(sft_cfg(), tmp_path / "run")
    loss = [r["loss"] for r in metrics(tmp_path / "run")]
    assert sum(loss[-2:]) / 2 <= loss[0] - 2.0, loss


def test_rerun_of_complete_run_is_a_noop_and_config_changes_are_refused(tmp_path):
    cfg = sft_cfg(steps=2)
    final = train_sft(cfg, tmp_path / "run")
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert train_sft(cfg, tmp_path / "run") == final
    assert stamp == {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="lr: saved 0.001, now 0.002"):
        train_sft(sft_cfg(steps=2, lr=2e-3), tmp_path / "run")
    run = tmp_path / "run"
    assert (run / "git_rev.txt").read_text().strip()
    assert set(os.listdir(run / "checkpoints" / "step_2")) == {
        "model.safetensors", "optimizer.pt", "scheduler.pt", "rng_0.pt", "state.json"}
    state = json.loads((run / "checkpoints" / "step_2" / "state.json").read_text())
    assert state["step"] == 2 and state["data"]["sampler"] == {"epoch": 0, "pos": 8}


def test_cli_trains_checkpoints_and_resumes(tmp_path):
    """`python -m methods.grpo --profile smoke` end to end, in two sessions."""
    out = tmp_path / "cli"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "methods.grpo", "--profile", "smoke", "--out", str(out), "steps=4"]
    first = subprocess.run(cmd + ["--stop-after", "2"], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "rerun to resume" in first.stdout and not (out / COMPLETE).exists()
    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.strip().endswith(str(out / "final"))
    assert (out / COMPLETE).is_file() and [r["step"] for r in metrics(out)] == [1, 2, 3, 4]


def test_grpo_with_reference_kl_and_several_epochs(tmp_path):
    """kl_coef > 0 loads a frozen pi_ref and adds the k3 term (>= 0, and > 0 once the policy has
    moved); ppo_epochs=2 with one mini-batch reuses each rollout batch twice."""
    cfg = grpo_cfg(steps=3, kl_coef=0.05, ppo_epochs=2, mini_batches_per_step=1,
                   loss_agg="seq-mean-token-mean")
    assert train_grpo(cfg, tmp_path / "run") is not None
    rows = metrics(tmp_path / "run")
    assert all(r["kl_ref"] >= 0 for r in rows) and rows[-1]["kl_ref"] > 0
    assert rows[0]["pg_ratio_mean"] != 1.0  # the second epoch sees a moved policy
