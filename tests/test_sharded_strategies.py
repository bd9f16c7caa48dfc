"""FSDP2 and DeepSpeed ZeRO-2 / ZeRO-3 on 2 CPU processes (gloo), launched with
``torch.distributed.run`` (tests/sharded_worker.py does the work of each rank).

Per strategy, three launches: the checks (gradients and shard counts, a frozen model sharded by
``Strategy.shard_frozen``, a 2-step OPD smoke run whose ranks decode different numbers of steps
with its teacher sharded) plus an SFT smoke run stopped after 2 of 3 steps, a fresh launch that
resumes it from the sharded checkpoint, and the same run uninterrupted. Slow
(each launch imports torch, transformers and DeepSpeed in 2 processes): marked ``slow``.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch

from harness.distributed import Strategy
from harness.update import accumulate_update
from trainer_helpers import fixed_batch, forward_of, logp_of, model_inputs, tiny_lm

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("sharded_worker.py")
STRATEGIES = ["fsdp", "zero2", "zero3"]
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None


def launch(name: str, out: Path, phase: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(WORKER),
           name, str(out), phase]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{name} {phase} failed:\n{(proc.stdout + proc.stderr)[-4000:]}"


@pytest.fixture(scope="module", params=STRATEGIES)
def runs(request, tmp_path_factory) -> tuple[str, Path]:
    name = request.param
    if name.startswith("zero") and not HAS_DEEPSPEED:
        pytest.skip("deepspeed is not installed (DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed==0.19.8)")
    out = tmp_path_factory.mktemp(name)
    for phase in ("checks", "resume", "whole"):
        launch(name, out, phase)
    return name, out


@pytest.fixture(scope="module")
def one_process_sft(tmp_path_factory) -> Path:
    from methods.registry import load_method_config
    from methods.sft.config import PROFILES, SFTConfig
    from methods.sft.trainer import train
    from sharded_worker import SFT_RUN

    out = tmp_path_factory.mktemp("one")
    return train(load_method_config(SFTConfig, PROFILES, "smoke", overrides=SFT_RUN | {"distributed": "single"}), out)


def _weights(final: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(final / "model.safetensors"))


def _checks(out: Path, rank: int) -> dict:
    return torch.load(out / f"checks_{rank}.pt", weights_only=False)


def test_split_batch_gives_the_one_process_update(runs):
    """One accumulate_update with SGD(lr=1) (weight change = -gradient) on 8 rows split 4 + 4 over
    2 ranks whose halves hold different token counts, in micro-batches of 2 and of 4: the loss
    and the gradient equal one process's on the whole batch. Tolerance 1e-6 absolute: fp32 sums
    in another order (the largest gradient entry is ~0.2)."""
    from sharded_worker import _grpo_loss

    model = tiny_lm()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = accumulate_update(model, torch.optim.SGD(model.parameters(), lr=1.0), Strategy("cpu"), fixed_batch(),
                             forward_of(model), _grpo_loss(), 8, None)["loss"]
    ref = {k: before[k] - v for k, v in model.state_dict().items()}
    name, out = runs
    for micro in (2, 4):
        delta, split_loss = _checks(out, 0)[("delta", micro)]
        assert abs(split_loss - loss) < 1e-6, (name, micro, split_loss, loss)
        for k in ref:
            torch.testing.assert_close(delta[k], ref[k], atol=1e-6, rtol=0, msg=f"{name}, micro {micro}: {k}")


def test_student_full_vocabulary_loss_gives_the_one_process_update(runs):
    """The fused full-vocabulary KL reads the student's lm_head weight itself: under fsdp / zero3
    that weight is a shard outside a forward, so the loss runs as the lm_head's forward
    (``ViewOutput.through_head``). SGD(lr=1) on 8 rows split 4 + 4 over 2 ranks, micro-batches of 2:
    loss and gradient (lm_head included) equal one process's within 1e-6 (fp32 sums in another order)."""
    from sharded_worker import full_kl_loss, kl_batch, view_forward_of

    model = tiny_lm()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = accumulate_update(model, torch.optim.SGD(model.parameters(), lr=1.0), Strategy("cpu"), kl_batch(),
                             view_forward_of(model), full_kl_loss, 8, None)["loss"]
    ref = {k: before[k] - v for k, v in model.state_dict().items()}
    assert ref["lm_head.weight"].abs().max() > 1e-3  # the KL moves the head
    name, out = runs
    delta, split_loss = _checks(out, 0)["kl_delta"]
    assert abs(split_loss - loss) < 1e-6, (name, split_loss, loss)
    for k in ref:
        torch.testing.assert_close(delta[k], ref[k], atol=1e-6, rtol=0, msg=f"{name}: {k}")


def test_each_rank_holds_half_the_state(runs):
    """Counted from the shards (RSS shows nothing at this size): AdamW's moments are split
    over the 2 ranks under every strategy; the parameters too under fsdp and zero3 (ZeRO-2
    keeps full parameters on each rank by design). Padding of flat partitions allows +1%."""
    name, out = runs
    for rank in (0, 1):
        c = _checks(out, rank)
        half = c["total"] / 2
        assert half * 0.95 <= c["optim"] / 2 <= half * 1.01, (name, rank, c)  # two moments per element
        if name == "zero2":
            assert c["params"] == c["total"]
        else:
            assert half * 0.95 <= c["params"] <= half * 1.01, (name, rank, c)
    assert _checks(out, 0)["optim"] + _checks(out, 1)["optim"] >= 2 * _checks(out, 0)["total"]


def test_two_processes_match_one_process(runs, one_process_sft):
    """The SFT smoke run (3 AdamW steps, lr 1e-3, global batch 4) on 2 ranks ends with the weights
    of 1 process to atol 1e-5 / rtol 1e-4: gradients agree to ~1e-7 (fp32 sums in another
    order), but Adam's first step is ~lr * g / |g| and amplifies that noise on near-zero
    gradient entries up to ~1e-6 of the weights; the losses agree to 1e-5."""
    name, out = runs
    one, two = _weights(one_process_sft), _weights(out / "whole" / "final")
    assert sorted(one) == sorted(two)
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=1e-5, rtol=1e-4, msg=f"{name}: {k}")
    la = [json.loads(x)["loss"] for x in (one_process_sft.parent / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (out / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert len(la) == len(lb) == 3 and max(abs(a - b) for a, b in zip(la, lb)) < 1e-5, (name, la, lb)


def test_resume_in_a_fresh_launch_is_bit_exact(runs):
    """Stopped after step 2 (checkpoint in the engine's own format), resumed in a new launch:
    the final weights and every logged loss equal the uninterrupted run's bit for bit."""
    name, out = runs
    ckpt = out / "resumed" / "checkpoints" / "step_2"
    assert (ckpt / ("dcp" if name == "fsdp" else "zero")).is_dir()
    assert not (ckpt / "model.safetensors").exists()
    a, b = _weights(out / "resumed" / "final"), _weights(out / "whole" / "final")
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{name}: {k} differs by {(a[k] - b[k]).abs().max()}"
    la = [json.loads(x)["loss"] for x in (out / "resumed" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (out / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert la == lb, (name, la, lb)


def _between_half_and(c: dict, local: str, total: str, name: str) -> None:
    half = c[total] / 2
    assert half * 0.95 <= c[local] <= half * 1.01, (name, local, c[local], c[total])


def test_a_frozen_model_sharded_for_inference_scores_as_the_whole_model(runs):
    """``Strategy.shard_frozen`` on a tiny frozen model: every rank's per-token log-probs on
    ``fixed_batch`` (top-level forward) and logits (backbone then ``lm_head``, as the scorers call
    them) equal the unsharded model's to 1e-6 absolute (the same fp32 ops on gathered weights),
    its ``lm_head`` gathers whole and bit-exact, no parameter wants a gradient, and each rank
    holds about half of its parameters under fsdp / zero3 (all of them under zero2)."""
    from sharded_worker import FROZEN_SEED

    name, out = runs
    whole = tiny_lm(FROZEN_SEED)
    batch = fixed_batch()
    with torch.no_grad():
        ref_logp = logp_of(whole, batch)
        ref_logits = whole(**model_inputs(batch)).logits
    for rank in (0, 1):
        c = _checks(out, rank)
        torch.testing.assert_close(c["frozen_logp"], ref_logp, atol=1e-6, rtol=0, msg=f"{name} rank {rank}")
        torch.testing.assert_close(c["frozen_logits"], ref_logits, atol=1e-6, rtol=0, msg=f"{name} rank {rank}")
        assert torch.equal(c["frozen_head"], whole.lm_head.weight.detach()), (name, rank)
        assert not c["frozen_grad"], (name, rank)
        assert c["frozen_total"] == sum(p.numel() for p in whole.parameters())
        if name == "zero2":
            assert c["frozen_params"] == c["frozen_total"], (name, rank, c["frozen_params"])
        else:
            _between_half_and(c, "frozen_params", "frozen_total", name)


def test_online_rollouts_with_unequal_lengths_and_a_sharded_teacher(runs):
    """The 2-step OPD smoke run (its teacher loaded through harness.trainer.load_frozen) finished
    although rank 0's responses all end after ``EOS_AFTER`` tokens and rank 1's run longer (the
    ranks decode different numbers of steps: ``generate`` must keep the ranks in step on a sharded
    policy), logged finite metrics every step, and its teacher was sharded like the student (half
    per rank under fsdp / zero3, whole under zero2)."""
    from sharded_worker import EOS_AFTER, OPD_RUN

    name, out = runs
    first, second = _checks(out, 0), _checks(out, 1)
    assert first["opd_steps"] and all(n == EOS_AFTER for n in first["opd_steps"]), (name, first["opd_steps"])
    assert len(second["opd_steps"]) == len(first["opd_steps"]), (name, second["opd_steps"])
    assert all(n > EOS_AFTER for n in second["opd_steps"]), (name, second["opd_steps"])
    records = [json.loads(x) for x in (out / "opd" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, OPD_RUN["steps"] + 1)), (name, records)
    for r in records:
        assert all(torch.isfinite(torch.tensor(float(v))) for v in r.values()), (name, r)
        assert "rkl_full" in r, (name, r)  # the teacher's whole lm_head was gathered for it
    assert (out / "opd" / "final" / "model.safetensors").is_file()
    for c in (first, second):
        if name == "zero2":
            assert c["teacher_params"] == c["teacher_total"], (name, c["teacher_params"])
        else:
            _between_half_and(c, "teacher_params", "teacher_total", name)
