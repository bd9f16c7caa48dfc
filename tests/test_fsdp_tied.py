"""FSDP2 and tied parameters (tie_word_embeddings: the real-vocabulary smoke models, Qwen2.5-VL-3B,
Qwen3-VL-2B / 4B): the student is refused in one line naming the tied modules and the strategy that
works (zero3); a frozen tied model stays a full copy on each rank, with a warning. One process (a
group of one), in a subprocess so that no process group outlives the test."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import logging, torch
from transformers import Qwen3Config, Qwen3ForCausalLM
from harness.distributed import make_strategy
from harness.fsdp import TiedParametersError

def tied():
    cfg = Qwen3Config(vocab_size=48, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=16, tie_word_embeddings=True)
    return Qwen3ForCausalLM(cfg)

strategy = make_strategy("fsdp", "cpu")
try:
    try:
        strategy.wrap(tied(), lambda m: torch.optim.SGD(m.parameters(), lr=1.0))
        print("NO ERROR")
    except TiedParametersError as e:
        print("ERROR", e)
    frozen = strategy.shard_frozen(tied())
    print("FROZEN", type(frozen.lm_head.weight).__name__, frozen.lm_head.weight is frozen.model.embed_tokens.weight)
finally:
    strategy.shutdown()
"""


@pytest.mark.timeout(300)
def test_fsdp_refuses_a_tied_student_and_keeps_a_tied_frozen_model_whole():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    error = next(line for line in lines if line.startswith(("ERROR", "NO ERROR")))
    assert error.startswith("ERROR distributed=fsdp: Qwen3ForCausalLM shares parameters between modules "
                            "(model.embed_tokens + lm_head; tie_word_embeddings)") and "use distributed=zero3" in error
    assert "FROZEN Parameter True" in lines  # not sharded (no DTensor), still tied
    assert "keeping a full copy of the frozen Qwen3ForCausalLM on every rank" in proc.stderr
