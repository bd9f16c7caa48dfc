"""Bad input is an error naming the file / row / field, raised before a run directory exists;
plus the small pieces of the run scaffold (data order, metrics truncation, checkpoints, registry)."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.checkpoint import latest_checkpoint, rng_state, set_rng_state
from harness.config import ConfigError
from harness.errors import DataError
from harness.run_dir import RunDir
from harness.trainer import EpochSampler, shard
from harness.distributed import Strategy
from methods.grpo.config import PROFILES as GRPO_PROFILES, GRPOConfig
from methods.grpo.trainer import train as train_grpo
from methods.registry import METHODS, cli_main, get_method, load_method_config
from methods.sft.config import PROFILES as SFT_PROFILES, SFTConfig
from methods.sft.trainer import train as train_sft

ORZ_OK = [{"from": "human", "value": "What is 1+1?"}, {"from": "assistant", "ground_truth": {"value": "2"}}]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def grpo(tmp_path: Path, **kw) -> Path | None:
    return train_grpo(load_method_config(GRPOConfig, GRPO_PROFILES, "smoke", overrides=kw), tmp_path / "run")


# ---------------------------------------------------------------------------- bad input


def test_malformed_config_names_file_and_key_and_creates_nothing(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    out = tmp_path / "run"
    cfg.write_text("lr: 1e-3\nclip_hgh: 0.3\n")
    assert cli_main("grpo", GRPOConfig, GRPO_PROFILES, train_grpo, ["--out", str(out), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert str(cfg) in err and "clip_hgh" in err and "unknown key" in err
    cfg.write_text("steps: many\n")
    assert cli_main("grpo", GRPOConfig, GRPO_PROFILES, train_grpo, ["--out", str(out), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert str(cfg) in err and "steps" in err and "expected int" in err
    cfg.write_text("- a list\n")
    assert cli_main("sft", SFTConfig, SFT_PROFILES, train_sft, ["--out", str(out), "--config", str(cfg)]) == 2
    assert str(cfg) in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("override, words", [
    ({"reward": "nope"}, ["reward", "smoke-even-tokens"]),
    ({"mini_batches_per_step": 0}, ["mini_batches_per_step"]),
    ({"warmup_steps": 99}, ["warmup_steps"]),
    ({"loss_agg": "mean"}, ["loss_agg", "token-mean"]),
])
def test_invalid_values_are_config_errors(override, words):
    with pytest.raises(ConfigError) as e:
        load_method_config(GRPOConfig, GRPO_PROFILES, "smoke", overrides=override)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_unknown_profile_is_an_error():
    with pytest.raises(ConfigError, match="known profiles"):
        load_method_config(GRPOConfig, GRPO_PROFILES, "huge")


def test_row_missing_its_answer_names_file_row_field(tmp_path):
    data = write_jsonl(tmp_path / "orz.jsonl", [ORZ_OK, [ORZ_OK[0], {"from": "assistant"}], ORZ_OK])
    with pytest.raises(DataError) as e:
        grpo(tmp_path, data=str(data))
    msg = str(e.value)
    assert str(data) in msg and "row 1" in msg and "ground_truth" in msg
    assert not (tmp_path / "run").exists()


def test_rows_without_answers_are_refused_by_grpo(tmp_path):
    """SFT-style rows (no gold answer) given to an RL run: the trainer names the row and field."""
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}] * 2
    data = write_jsonl(tmp_path / "mot.jsonl", rows)
    with pytest.raises(DataError) as e:
        grpo(tmp_path, data=str(data))
    assert str(data) in str(e.value) and "row 0" in str(e.value) and "'answer'" in str(e.value)
    assert not (tmp_path / "run").exists()


def test_rows_without_responses_are_refused_by_sft(tmp_path):
    data = write_jsonl(tmp_path / "orz.jsonl", [ORZ_OK])
    cfg = load_method_config(SFTConfig, SFT_PROFILES, "smoke", overrides={"data": str(data)})
    with pytest.raises(DataError, match=r"row 0: field 'response'"):
        train_sft(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_image_that_does_not_decode_names_file_row_field(tmp_path):
    from PIL import Image

    Image.new("RGB", (28, 28), "white").save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    rows = [{"problem": "<image>How many?", "answer": "1", "images": ["ok.png"]},
            {"problem": "<image>How many?", "answer": "2", "images": ["bad.png"]}]
    data = write_jsonl(tmp_path / "geo.jsonl", rows)
    with pytest.raises(DataError) as e:
        grpo(tmp_path, data=str(data))
    msg = str(e.value)
    assert str(data) in msg and "row 1" in msg and "images[0]" in msg and "does not decode" in msg
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------- scaffold pieces


def test_sampler_is_deterministic_covers_each_epoch_and_resumes():
    a = EpochSampler(10, seed=3)
    first = a.take(7) + a.take(7)  # crosses into epoch 1
    assert sorted(first[:10]) == list(range(10))
    b = EpochSampler(10, seed=3)
    b.take(7)
    c = EpochSampler(10, seed=3)
    c.load_state_dict(b.state_dict())
    assert c.take(7) == first[7:]
    assert EpochSampler(10, seed=4).take(10) != first[:10]


def test_shard_gives_contiguous_equal_pieces():
    s = Strategy("cpu")
    s.rank, s.world_size = 1, 2
    assert shard(list(range(8)), s) == [4, 5, 6, 7]
    with pytest.raises(ValueError, match="divisible"):
        shard(list(range(5)), s)


def test_metrics_after_the_checkpoint_are_dropped(tmp_path):
    run = RunDir(tmp_path)
    for step in (1, 2, 3):
        run.log({"step": step, "loss": float(step)})
    with run.metrics_path.open("a") as f:
        f.write('{"step": 4, "lo')  # cut by a crash
    run.truncate_metrics(2)
    assert [r["step"] for r in run.read_metrics()] == [1, 2]


def test_half_written_checkpoints_are_ignored(tmp_path):
    ck = tmp_path / "checkpoints"
    (ck / "step_2").mkdir(parents=True)
    (ck / "step_2" / "state.json").write_text(json.dumps({"step": 2, "data": {"x": 1}}))
    (ck / ".step_4.tmp").mkdir()
    (ck / "step_6").mkdir()  # no state.json: not complete
    latest = latest_checkpoint(ck)
    assert latest is not None and latest.step == 2 and latest.data == {"x": 1}
    assert latest_checkpoint(tmp_path / "none") is None


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    torch.save(rng_state(), tmp_path / "rng.pt")
    want = (torch.rand(3), random.random(), np.random.rand())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(want[0], got[0]) and want[1:] == got[1:]


def test_registry_lists_methods_and_trains_through_the_common_signature(tmp_path):
    assert {"grpo", "sft", "opd", "vold", "reopold", "vgs", "ptdpo"} <= set(METHODS)
    assert [n for n, s in METHODS.items() if s.implemented] == ["sft", "grpo", "opd", "vold_traces", "vold_sft", "vold",
                                                                  "reopold", "vgs", "vgs_teacher", "ptdpo"]
    assert all(s.train is None for s in METHODS.values() if not s.implemented)
    with pytest.raises(KeyError, match="known methods: .*grpo"):
        get_method("ppo")
    final = get_method("sft").train({"steps": 2}, tmp_path / "sft", "smoke")
    from harness.models import load_model
    bundle = load_model(final)
    assert bundle.is_vlm and bundle.tokenizer is not None and bundle.processor is not None


def test_rewards_on_constructed_trajectories():
    from harness.types import Sample, Trajectories
    from harness.reward_registry import make_reward_fn

    traj = Trajectories(
        samples=[Sample(id="a", prompt="p", answer="12")], prompt_ids=torch.zeros(3, 1, dtype=torch.long),
        prompt_mask=torch.ones(3, 1, dtype=torch.long),
        response_ids=torch.tensor([[2, 4, 3, 0], [1, 0, 0, 0], [6, 8, 10, 12]]),
        response_mask=torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]]), old_logp=torch.zeros(3, 4),
        group_ids=torch.zeros(3, dtype=torch.long),
        texts=["so \\boxed{12}", "\\boxed{12.0} or 12", "12"])
    assert make_reward_fn("smoke-even-tokens")(traj).tolist() == pytest.approx([2 / 3, 0.0, 1.0])
    assert make_reward_fn("boxed-exact")(traj).tolist() == [1.0, 0.0, 0.0]
    assert make_reward_fn("smoke-contains-answer")(traj).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(KeyError, match="known rewards"):
        make_reward_fn("nope")
