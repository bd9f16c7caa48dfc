"""The VOLD stages end to end in the smoke profile: stage-0 traces (resumable, length filter),
SFT on them (and the cold-start export), RL with Geo3K validation; the registry entry points;
VOLD with beta = 0 trains exactly like methods.grpo."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import safetensors.torch

from harness.data import load_training_set
from harness.models import load_model
from methods.vold import load_stage_config, train_rl, train_sft, train_traces
from methods.vold.traces import DATA_FILE, generate_traces, read_manifest


def test_traces_are_a_resumable_dataset_in_the_mot_schema(tmp_path):
    cfg = load_stage_config("traces", "smoke", {"data_limit": 12, "chunk_prompts": 4})
    out = generate_traces(cfg, tmp_path / "t")
    manifest = read_manifest(out)
    assert manifest["prompts"] == 12 and manifest["kept"] == 12 and manifest["teacher"] == "smoke:qwen3"
    rows = load_training_set(out)  # harness.data reads it like Mixture-of-Thoughts
    assert len(rows) == 12 and all(r.response and r.answer is None for r in rows)
    assert rows[0].prompt == load_training_set("smoke-text-math", limit=1)[0].prompt
    # resume after losing a chunk and the final export: the same traces again
    first = (out / DATA_FILE).read_text()
    (tmp_path / "t" / "COMPLETE").unlink()
    shutil.rmtree(out)
    (tmp_path / "t" / "parts" / "chunk_000001.jsonl").unlink()
    again = generate_traces(cfg, tmp_path / "t")
    assert (again / DATA_FILE).read_text() == first


def test_over_length_traces_are_dropped(tmp_path):
    cfg = load_stage_config("traces", "smoke", {"data_limit": 8, "drop_truncated": True, "max_new_tokens": 3})
    with pytest.raises(RuntimeError, match="kept no trace"):
        generate_traces(cfg, tmp_path / "t")  # a random tiny model never ends within 3 tokens
    cfg = load_stage_config("traces", "smoke", {"data_limit": 8, "drop_truncated": False, "max_new_tokens": 3})
    m = read_manifest(generate_traces(cfg, tmp_path / "u"))
    assert m["truncated"] == m["kept"] == 8 and all(
        json.loads(line)["num_tokens"] <= 3 for line in (tmp_path / "u" / "final" / DATA_FILE).read_text().splitlines())


def test_full_smoke_pipeline_through_the_registry_functions(tmp_path):
    traces = train_traces({"data_limit": 8}, tmp_path / "traces", "smoke")
    sft = train_sft({"teacher": str(traces), "steps": 4, "data_limit": 8}, tmp_path / "sft", "smoke")
    assert load_model(sft).is_vlm
    # the SFT trained on the teacher traces, not on the original reference solutions
    cfg_text = (tmp_path / "sft" / "config.yaml").read_text()
    assert str(traces) in cfg_text
    with pytest.raises(Exception, match="generated from the prompts"):
        train_sft({"teacher": str(traces), "data": "smoke-visual"}, tmp_path / "sft2", "smoke")
    from evals.validation import benchmark_validator

    final = train_rl({"model": str(sft), "steps": 4, "val_every": 2}, tmp_path / "rl", "smoke",
                     validator=benchmark_validator)
    assert load_model(final).is_vlm
    recs = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    assert "val_acc_step0" in recs[0] and "val_acc" in recs[1] and "val_acc" in recs[3]
    assert all(0 <= r["kl_active_frac"] <= 1 and r["kl"] >= 0 for r in recs)
    assert train_rl({"model": str(sft), "steps": 4, "val_every": 2}, tmp_path / "rl", "smoke",
                    validator=benchmark_validator) == final  # resume
    from methods.vold.curves import plot_learning_curves

    assert plot_learning_curves({"vold": tmp_path / "rl"}, tmp_path / "fig3.png").stat().st_size > 0


def test_cold_start_export_is_the_state_after_n_steps(tmp_path):
    traces = train_traces({"data_limit": 8}, tmp_path / "traces", "smoke")
    over = {"teacher": str(traces), "data_limit": 8, "steps": 4, "save_every": 1, "keep_checkpoints": 10}
    part = train_sft({**over, "stop_at": 2}, tmp_path / "sft2", "smoke")
    full = train_sft(over, tmp_path / "sft4", "smoke")
    assert part.name == "final_step_2" and full.name == "final"
    a = load_model(part).model.state_dict()
    b = safetensors.torch.load_file(str(tmp_path / "sft4" / "checkpoints" / "step_2" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_vold_with_beta_zero_trains_exactly_like_grpo(tmp_path):
    from methods.grpo.config import PROFILES
    from methods.grpo.trainer import train as grpo_train
    from methods.registry import load_method_config
    from methods.grpo.config import GRPOConfig

    common = {"steps": 2, "reward": "smoke-even-tokens", "save_every": 2, "clip_high": 0.3,  # VOLD's clip-higher
              "data": "smoke-learnable", "lr": 1e-2, "max_new_tokens": 6}  # GRPO's smoke task
    grpo_cfg = load_method_config(GRPOConfig, PROFILES, "smoke", None, common)
    g = grpo_train(grpo_cfg, tmp_path / "grpo")
    v = train_rl({**common, "beta": 0.0, "val_every": 0}, tmp_path / "vold", "smoke")
    ga = safetensors.torch.load_file(str(g / "model.safetensors"))
    va = safetensors.torch.load_file(str(v / "model.safetensors"))
    assert ga.keys() == va.keys() and all(torch.equal(ga[k], va[k]) for k in ga)
