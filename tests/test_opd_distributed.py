"""methods.opd on 2 processes (gloo) matches 1 process, starting from a cold smoke-model cache.

Rollouts are greedy and generated one prompt at a time, so both layouts see the same tokens
(sampling seeds are per rank); the update sums gradients over ranks with global normalisers, so
the gradients agree with the one-process run up to float summation order. AdamW normalises each
element's step, so that noise in a near-zero gradient can move a weight by a fraction of the
learning rate: the final weights must agree to 2.5% of one step (lr 2e-3 -> 5e-5); the losses
to 1e-5.
Each rank builds the tiny models itself into an empty cache after the process group exists: the
case in which transformers' rank-0-only ``save_pretrained`` used to poison the cache.
"""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from harness.jsonl import read_jsonl

RUN = {"steps": 3, "save_every": 3, "prompts_per_step": 4, "num_generations": 2, "max_new_tokens": 5,
       "temperature": 0.0, "rollout_batch_size": 1, "micro_batch_size": 3, "log_full_rkl": False}


def _config(**kw):
    from methods.opd.config import PROFILES, OPDConfig
    from methods.registry import load_method_config

    return load_method_config(OPDConfig, PROFILES, "smoke", overrides={**RUN, **kw})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, cache: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), VLMREPRO_CACHE=cache)
    torch.set_num_threads(1)
    from methods.opd.trainer import train

    train(_config(distributed="ddp"), out)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("opd_dp")
    cache = root / "cold-cache"
    mp.spawn(_worker, args=(2, _free_port(), str(root / "run"), str(cache)), nprocs=2, join=True)
    return root


def test_two_processes_from_a_cold_cache_match_one_process(two_process_run, tmp_path):
    import safetensors.torch
    from harness.tiny import smoke_entry_complete
    from methods.opd.trainer import train

    cache = two_process_run / "cold-cache"
    entries = sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))
    assert any(e.startswith("qwen2_5_vl-") for e in entries) and any(e.startswith("qwen3_teacher-") for e in entries)
    for e in entries:
        if not e.endswith(".lock"):
            assert smoke_entry_complete(cache / e, e.rsplit("-", 1)[0].removesuffix("-bpe")), e
    two = two_process_run / "run"
    assert (two / "COMPLETE").is_file()
    one = train(_config(), tmp_path / "one")
    wa = safetensors.torch.load_file(str(one / "model.safetensors"))
    wb = safetensors.torch.load_file(str(two / "final" / "model.safetensors"))
    from harness.models import smoke_model_path

    init = safetensors.torch.load_file(str(smoke_model_path("qwen2_5_vl") / "model.safetensors"))
    moved = max(float((wa[k] - init[k]).abs().max()) for k in wa)
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert worst < 0.025 * _config().lr, worst
    la = [r["loss"] for r in read_jsonl(tmp_path / "one" / "metrics.jsonl")]
    lb = [r["loss"] for r in read_jsonl(two / "metrics.jsonl")]
    assert max(abs(a - b) for a, b in zip(la, lb)) < 1e-5, (la, lb)
    assert len(la) == len(lb) == 3 and moved > 1e-4  # training moved the weights: the match is not trivial
