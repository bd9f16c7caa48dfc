"""Multi-turn tool-use evaluation (REOPOLD Table 6, Pixel-Reasoner's protocol): a scripted model
that calls ``crop_image`` gets the cropped image back as an observation, and its final answer,
written after the observation, is what the benchmark scores; the Pixel-Reasoner test-split
benchmark in its smoke schema; the smoke tool-use SFT traces are well-formed tool calls."""
from __future__ import annotations

import json

import pytest

from harness.models import load_model, smoke_model_path
from harness.tools import CALL_CLOSE, CALL_OPEN, Observation, parse_tool_call, tool_system_prompt
from test_tool_rollouts import ScriptedEngine, call

import evals
from evals.benchmarks import get_benchmark


@pytest.fixture(scope="module")
def vlm():
    return load_model(str(smoke_model_path("qwen2_5_vl")))


def test_pixel_reasoner_smoke_rows_are_in_the_release_schema():
    bench = get_benchmark("pixel_reasoner")
    rows = bench.smoke_rows(4, seed=0)
    assert {"qid", "question", "image", "is_video", "answer"} <= set(rows[0])
    assert all(isinstance(r["image"], list) and isinstance(r["answer"], list) for r in rows)
    samples = bench.load("smoke", smoke_n=4)
    assert len(samples) == 4 and all(s.images for s in samples)
    s = samples[0]
    gold = s.meta["answers"][0]
    assert bench.score(s, f"I zoomed in. \\boxed{{{gold}}}")["correct"]
    assert bench.score(s, f"\\boxed{{{gold.upper()}}}")["correct"]            # lower-case retry
    assert not bench.score(s, "\\boxed{nothing}")["correct"]


class _Engine(ScriptedEngine):
    """Scripts keyed by the gold answer's position: every prompt gets the same script."""

    def __init__(self, bundle, rounds):
        super().__init__(bundle, {"": rounds})


def test_tool_eval_returns_the_crop_and_scores_the_final_answer(vlm, tmp_path):
    bench = get_benchmark("pixel_reasoner")
    samples = bench.load("smoke", smoke_n=2)
    golds = {s.id: s.meta["answers"][0] for s in samples}
    # one script for all rows; the final round answers the first sample's gold
    first_gold = next(iter(golds.values()))
    rounds = ["Let me look closer. " + call("crop_image", bbox_2d=[8, 8, 56, 56], target_image=1),
              f"\\boxed{{{first_gold}}}"]
    engine = _Engine(vlm, rounds)
    out = evals.run("scripted", "pixel_reasoner", out_dir=tmp_path, engine=engine, source="smoke", smoke_n=2,
                    mode="sample", k=1, temperature=1.0, top_p=1.0, max_new_tokens=120, tool_rounds=5,
                    progress=False)
    recs = [json.loads(line) for line in (tmp_path / "pixel_reasoner" / "records.jsonl").read_text().splitlines()]
    assert len(recs) == 2
    for r in recs:
        (calls,) = r["tool_calls"]                       # k = 1: one response, its calls
        assert len(calls) == 1 and calls[0]["name"] == "crop_image" and not calls[0]["error"]
        assert "Cropped region [8, 8, 56, 56] of image 1" in calls[0]["observation"]
        (traj,) = r["trajectories"]                     # the whole trajectory, observation included
        assert "Cropped region [8, 8, 56, 56]" in traj and traj.rstrip().endswith(f"\\boxed{{{first_gold}}}")
        assert "Cropped region" not in r["response"]     # scored: the model's own tokens only
        assert r["response"].startswith("Let me look closer. <tool_call>")
        assert r["extracted"] == first_gold
        assert r["correct"] == [golds[r["id"]] == first_gold]
    summary = out["pixel_reasoner"]
    cfg = json.loads((tmp_path / "pixel_reasoner" / "config.json").read_text())
    assert cfg["tool_rounds"] == 5 and cfg["system"] == tool_system_prompt(["crop_image"])
    assert summary["n"] == 2


def test_tool_rounds_zero_is_single_turn(vlm, tmp_path):
    rounds = [call("crop_image", bbox_2d=[8, 8, 56, 56], target_image=1)]
    engine = _Engine(vlm, rounds)
    evals.run("scripted", "pixel_reasoner", out_dir=tmp_path, engine=engine, source="smoke", smoke_n=1,
              max_new_tokens=80, progress=False)
    (rec,) = [json.loads(line) for line in (tmp_path / "pixel_reasoner" / "records.jsonl").read_text().splitlines()]
    assert "tool_calls" not in rec and "trajectories" not in rec and "Cropped region" not in rec["response"]


def test_numbers_in_an_observation_are_never_the_answer(vlm, tmp_path):
    """A malformed call's error text holds numbers ("char 0"); a model that then writes no answer
    must score as unanswered, not as having answered a number from the observation."""
    rounds = ['<tool_call>{"name": }</tool_call>', "I cannot tell."]
    evals.run("scripted", "tallyqa", out_dir=tmp_path, engine=_Engine(vlm, rounds), source="smoke", smoke_n=2,
              max_new_tokens=80, tool_rounds=1, progress=False)
    recs = [json.loads(line) for line in (tmp_path / "tallyqa" / "records.jsonl").read_text().splitlines()]
    for r in recs:
        assert r["tool_calls"][0][0]["error"] and "char" in r["tool_calls"][0][0]["observation"]
        assert "char" in r["trajectories"][0] and "char" not in r["response"]
        assert "char" not in str(r["extracted"]) and r["score"] == 0


def test_smoke_tool_traces_are_well_formed_tool_calls():
    from harness.data import load_training_set
    from harness.data.packaged import tool_trace_box

    rows = load_training_set("smoke-tool-traces", limit=8)
    assert len(rows) == 8 and len({r.id for r in rows}) == 8
    for r in rows:
        assert r.system == tool_system_prompt(["crop_image"]) and r.images
        call_text, obs, answer = r.meta["response_segments"]
        parsed = parse_tool_call(call_text)
        assert call_text.startswith(CALL_OPEN) and call_text.endswith(CALL_CLOSE)
        assert parsed.name == "crop_image"
        w, h = r.images[0].size
        assert parsed.arguments == {"bbox_2d": tool_trace_box(w, h)}
        assert isinstance(obs, Observation) and not obs.error and len(obs.images) == 1
        x1, y1, x2, y2 = tool_trace_box(w, h)
        assert obs.images[0].size[0] >= x2 - x1
        assert answer == f"\\boxed{{{r.answer}}}"
        assert r.response.startswith(call_text) and r.response.endswith(answer)


def test_sft_masks_the_observation_of_a_trace(vlm):
    from harness.data import load_training_set
    from harness.scoring import encode_pairs, token_logprobs

    rows = load_training_set("smoke-tool-traces", limit=2)
    traj = encode_pairs(vlm, rows, max_length=512)
    assert traj.response_valid is not None and [len(x) for x in traj.response_images] == [1, 1]
    masked = (traj.response_valid - traj.response_mask)
    assert (masked >= 0).all() and masked.sum() > 0       # observation tokens: attended, not trained
    pad = vlm.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert ((traj.response_ids == pad) & traj.response_mask.bool()).sum() == 0
    lp = token_logprobs(vlm, traj)
    assert lp.isfinite().all() and (lp[traj.response_mask == 0] == 0).all()
