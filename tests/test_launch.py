"""reproduce's launcher (reproduce.launch / reproduce.stage): each training stage as a torchrun job."""
from __future__ import annotations

import pytest
import safetensors.torch
import torch

from harness.errors import ConfigError
from reproduce.launch import Launch
from tests.test_reproduce import write_toy


def test_launch_command_lines():
    one = Launch(nproc_per_node=8).command("/runs/x", "stages/sft-1")
    assert one[1:4] == ["-m", "torch.distributed.run", "--nproc-per-node=8"] and "--standalone" in one
    assert one[-4:] == ["-m", "reproduce.stage", "/runs/x", "stages/sft-1"]
    two = Launch(8, 2, 1, "node0", 29600).command("/runs/x", "stages/sft-1")
    assert {"--nnodes=2", "--node-rank=1", "--master-addr=node0", "--master-port=29600"} <= set(two)
    assert "--standalone" not in two
    assert not Launch().distributed and Launch(2).distributed and Launch(1, 2).distributed
    assert Launch(1, 2, 0).is_main_node and not Launch(1, 2, 1).is_main_node
    with pytest.raises(ConfigError, match="node-rank"):
        Launch(8, 2, 2)
    with pytest.raises(ConfigError, match="nproc-per-node"):
        Launch(0)


def _toy(tmp_path):
    rdir, pdir = write_toy(tmp_path)
    evaluated = []

    def fake_eval(model, benchmarks, **kw):
        evaluated.append(model)
        return {}

    return dict(eval_fn=fake_eval, recipe_dir=rdir, published_dir=pdir), evaluated


@pytest.mark.slow
def test_a_stage_under_torchrun_on_two_processes_matches_one_process(tmp_path):
    """The SFT stage of a toy table trained by ``--nproc-per-node 2`` (2 gloo ranks, DDP through
    the trainer's ``distributed: auto``) ends at the weights of the in-process run: the same global
    batch, split over two ranks (tolerance 1e-5: float sums in another order; Adam's first step
    divides tiny gradients by their own size, so an atol on weights, not gradients)."""
    from reproduce import run_table

    kw, evaluated = _toy(tmp_path)
    res = run_table("toy", "table2", "smoke", tmp_path / "two", rows=["sft_only"], launch=Launch(2), **kw)
    log = next((tmp_path / "two" / "logs").glob("*.launch.log")).read_text()
    assert "rank 0/2: sft (sft)" in log and "rank 1/2: sft (sft)" in log
    assert res["report"] is not None and evaluated and str(evaluated[0]).endswith("final")
    run_table("toy", "table2", "smoke", tmp_path / "one", rows=["sft_only"], **kw)
    (two,) = (tmp_path / "two" / "stages").glob("sft-*/final/model.safetensors")
    (one,) = (tmp_path / "one" / "stages").glob("sft-*/final/model.safetensors")
    a, b = safetensors.torch.load_file(str(two)), safetensors.torch.load_file(str(one))
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=0) for k in a)
    from harness.tiny import smoke_model_path
    base = safetensors.torch.load_file(str(smoke_model_path("qwen2_5_vl") / "model.safetensors"))
    assert any(not torch.allclose(a[k], base[k], atol=1e-4) for k in a if k in base)  # it did train
