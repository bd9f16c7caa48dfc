"""Tool calls: the parser, the built-in tools, and multi-turn rollouts whose scorers see the same
full trajectory (generated + observation tokens, observation images) as the policy did."""
from __future__ import annotations

import dataclasses
import json
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers import LogitsProcessor

from harness.models import build_tiny_model, load_model, smoke_model_path
from harness.rollout.base import RolloutEngine
from harness.rollout.hf import HFRolloutEngine
from harness.rollout.multiturn import MultiTurnEngine, first_stop, observation_text, render_observation
from harness.scoring import processor_key, render_prompt, response_hidden_states, token_logprobs
from harness.tiny import tiny_image_processor
from harness.tools import (TOOLS, Calculate, CropImage, Observation, ToolCall, ToolCallError, execute_tool_call,
                           parse_tool_call, register_tool)
from harness.types import Sample, SamplingParams
from harness.update import select_rows

ATOL = 1e-4


def call(name: str, **arguments) -> str:
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


# ------------------------------------------------------------------------------ parser
def test_parse_tool_call_formats():
    assert parse_tool_call("no call here") is None
    c = parse_tool_call('Let me zoom. <tool_call>{"name": "crop_image", "arguments": '
                        '{"bbox_2d": [1, 2, 30, 40], "target_image": 1}}</tool_call> trailing')
    assert c == ToolCall("crop_image", {"bbox_2d": [1, 2, 30, 40], "target_image": 1})
    # arguments given as a JSON string (some models do this) and a missing arguments object
    assert parse_tool_call('<tool_call>{"name": "calculate", "arguments": "{\\"expression\\": \\"1+1\\"}"}'
                           '</tool_call>') == ToolCall("calculate", {"expression": "1+1"})
    assert parse_tool_call('<tool_call>{"name": "calculate"}</tool_call>') == ToolCall("calculate", {})
    # the first complete call counts
    assert parse_tool_call(call("a") + call("b")).name == "a"


@pytest.mark.parametrize("text, words", [
    ("<tool_call>{\"name\": \"crop_image\"", "unterminated"),
    ("<tool_call>{name: crop}</tool_call>", "not valid JSON"),
    ("<tool_call>[1, 2]</tool_call>", "JSON object"),
    ("<tool_call>{\"arguments\": {}}</tool_call>", "no \"name\""),
    ("<tool_call>{\"name\": \"x\", \"arguments\": [1]}</tool_call>", "\"arguments\" must be"),
    ("<tool_call>{\"name\": \"x\", \"arguments\": \"{bad\"}</tool_call>", "not valid JSON"),
    ("<tool_call>" + "[" * 5000 + "</tool_call>", "too long"),
])
def test_malformed_calls_are_errors_not_exceptions(text, words):
    err = parse_tool_call(text)
    assert isinstance(err, ToolCallError) and words in err.message
    obs = execute_tool_call(err, [])
    assert obs.error and obs.text.startswith("Error: ") and words in obs.text


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["<tool_call>", "</tool_call>", "{", "}", "\"name\"", ":", "\"arguments\"",
                                 "[", "]", ",", "\"crop_image\"", "1", "\\", "\"", "<tool_", "call>"])
                | st.text(max_size=20), max_size=40).map("".join))
def test_parse_tool_call_never_raises(text):
    result = parse_tool_call(text)
    assert result is None or isinstance(result, (ToolCall, ToolCallError))
    execute_tool_call(result if result is not None else ToolCallError("none"), [])  # never raises


@pytest.mark.parametrize("unit", ["<tool_call>", "<tool_call", "</tool_call>", "<tool_call>{\"a\": ", "<<<<"])
def test_parse_tool_call_is_linear_on_adversarial_input(unit):
    def timed(reps: int) -> float:
        text = unit * reps
        start = time.perf_counter()
        parse_tool_call(text)
        return time.perf_counter() - start

    timed(1000)
    big = timed(200_000)  # ~1-2 MB of text
    assert big < 0.5, f"parse_tool_call took {big:.2f}s on {len(unit) * 200_000} characters"


# ------------------------------------------------------------------------------- tools
def _image(w: int = 64, h: int = 48) -> Image.Image:
    im = Image.new("RGB", (w, h), (200, 30, 30))
    im.paste((30, 30, 200), (w // 2, 0, w, h))
    return im


def test_crop_image_crops_and_upscales():
    crop = TOOLS["crop_image"]
    obs = crop({"bbox_2d": [32, 0, 64, 48], "target_image": 1}, [_image()])
    assert not obs.error and len(obs.images) == 1 and obs.images[0].size == (32, 48)
    assert obs.images[0].getpixel((5, 5)) == (30, 30, 200)  # the blue half
    small = crop({"bbox_2d": [0, 0, 7, 14], "target_image": 2}, [_image(), _image(100, 80)])
    assert min(small.images[0].size) == 28 and small.images[0].size == (28, 56)  # aspect ratio kept
    assert isinstance(crop, CropImage) and crop.name == "crop_image"


@pytest.mark.parametrize("arguments, words", [
    ({"bbox_2d": [0, 0, 65, 10]}, "outside image 1"),
    ({"bbox_2d": [-1, 0, 10, 10]}, "outside"),
    ({"bbox_2d": [10, 10, 10, 20]}, "empty"),  # zero width
    ({"bbox_2d": [10, 20, 30, 5]}, "empty"),  # y2 < y1
    ({"bbox_2d": [0, 0, 10, 10], "target_image": 3}, "target_image must be an integer from 1 to 2"),
    ({"bbox_2d": [0, 0, 10, 10], "target_image": 0}, "target_image"),
    ({"bbox_2d": [0, 0, 10, 10], "target_image": "1"}, "target_image"),
    ({"bbox_2d": [0, 0, 10, 10], "target_image": True}, "target_image"),
    ({}, "missing argument bbox_2d"),
    ({"bbox_2d": [0, 0, 10]}, "four numbers"),
    ({"bbox_2d": "0,0,10,10"}, "four numbers"),
    ({"bbox_2d": [0, 0, "a", 10]}, "four numbers"),
    ({"bbox_2d": [0, 0, 48, 48], "zoom": 2}, "unexpected argument"),
    ({"bbox_2d": [0, 0, 64, 1]}, None),  # 64 x 1 is fine (aspect 64)
])
def test_crop_image_errors(arguments, words):
    obs = execute_tool_call(ToolCall("crop_image", arguments), [_image(), _image()])
    if words is None:
        assert not obs.error
    else:
        assert obs.error and obs.text.startswith("Error: crop_image: ") and words in obs.text, obs.text
    assert execute_tool_call(ToolCall("crop_image", {"bbox_2d": [0, 0, 5, 5]}), []).text.endswith("no image to crop")


@pytest.mark.parametrize("expression, result", [
    ("12 * (3 + 4)", "84"), ("7 / 2", "3.5"), ("-3 ** 2", "-9"), ("(-3) ** 2", "9"), ("2 ** -1", "0.5"),
    ("2 ** 64", "18446744073709551616"), ("+1.5 * 2", "3"), ("1 / 3", "0.333333333333"), ("1e3 - 1", "999"),
])
def test_calculate(expression, result):
    obs = execute_tool_call(ToolCall("calculate", {"expression": expression}), [])
    assert not obs.error and obs.text == f"{expression} = {result}"


@pytest.mark.parametrize("expression, words", [
    ("__import__('os').system('true')", "unsupported syntax"), ("abs(-1)", "unsupported syntax"),
    ("x + 1", "unsupported syntax"), ("'a' * 3", "only numbers"), ("True + 1", "only numbers"),
    ("1j * 2", "only numbers"), ("1 / 0", "division by zero"), ("9 ** 9 ** 9", "exponent"),
    ("(10 ** 60) ** 60", "out of range"), ("1e300 * 1e300", "out of range"), ("7 // 2", "unsupported syntax"),
    ("1 +", "cannot parse"), ("1" * 300, "too long"), ("(-8) ** 0.5", "negative"), ("0 ** -1", "zero"),
])
def test_calculate_refuses(expression, words):
    obs = execute_tool_call(ToolCall("calculate", {"expression": expression}), [])
    assert obs.error and words in obs.text, obs.text
    assert "missing argument" in execute_tool_call(ToolCall("calculate", {}), []).text


def test_unknown_tool_and_crashing_tool_become_error_observations():
    obs = execute_tool_call(ToolCall("foo", {}), [])
    assert obs.error and obs.text == "Error: unknown tool 'foo'; known: calculate, crop_image"

    class Broken:
        name = "broken"

        def __call__(self, arguments, images):
            raise KeyError("boom")

    obs = execute_tool_call(ToolCall("broken", {}), [], {"broken": Broken()})
    assert obs.error and "KeyError" in obs.text
    with pytest.raises(ValueError, match="already registered"):
        register_tool(Calculate())


# --------------------------------------------------------------------- scripted policies
class _Force(LogitsProcessor):
    """Forces row ``r`` to emit ``scripts[r]`` then EOS (after the raw log-prob recorder)."""

    def __init__(self, scripts: list[list[int]], eos: int) -> None:
        self.scripts, self.eos, self.start = scripts, eos, None

    def __call__(self, input_ids, scores):
        if self.start is None:
            self.start = input_ids.shape[1]
        step = input_ids.shape[1] - self.start
        out = torch.full_like(scores, -float("inf"))
        for r, s in enumerate(self.scripts):
            out[r, s[step] if step < len(s) else self.eos] = 0.0
        return out


class ScriptedEngine(HFRolloutEngine):
    """The HF engine with each row's text forced by a script: ``scripts[marker][round]`` for the
    row whose prompt contains ``marker``. ``old_logp`` still records the model's raw log-probs."""

    def __init__(self, bundle, scripts: dict[str, list[str]]) -> None:
        super().__init__(bundle, batch_size=8, progress=False)
        self.scripts = scripts
        self._rows: list[list[int]] = []
        self.round = 0

    def continue_rows(self, contexts, images, sampling, stop, round_index):
        self.round = round_index
        return super().continue_rows(contexts, images, sampling, stop, round_index)

    def _generate_rows(self, contexts, sampling, stop=None):
        tok = self.bundle.tokenizer
        self._rows = []
        for c in contexts:
            text = tok.decode(c["input_ids"].tolist())
            (marker,) = [m for m in self.scripts if m in text]
            rounds = self.scripts[marker]
            self._rows.append(tok.encode(rounds[self.round], add_special_tokens=False)
                              if self.round < len(rounds) else [])
        return super()._generate_rows(contexts, sampling, stop)

    def _generation_config(self, sampling):
        config, processors, recorder = super()._generation_config(sampling)
        processors.append(_Force(self._rows, self.bundle.eos_token_ids[0]))
        return config, processors, recorder


@pytest.fixture(scope="module")
def vlm():
    return load_model(str(smoke_model_path("qwen2_5_vl")))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return load_model(build_tiny_model("qwen2_5_vl", tmp_path_factory.mktemp("teacher"), seed=7))


VLM_SCRIPTS = {
    "[zoom]": ["Zoom. " + call("crop_image", bbox_2d=[32, 0, 64, 32], target_image=1),
               call("crop_image", bbox_2d=[0, 0, 20, 30], target_image=2), "It is blue."],
    "[bad]": [call("crop_image", bbox_2d=[0, 0, 0, 10], target_image=1),
              '<tool_call>{"name": "crop_image", "arguments": {bad</tool_call>', "I am not sure."],
    "[two]": [call("crop_image", bbox_2d=[10, 10, 90, 70], target_image=2),
              call("crop_image", bbox_2d=[0, 0, 30, 40], target_image=3), "Red."],
    "[none]": ["No tools: 3."],
}


def _vlm_samples() -> list[Sample]:
    return [Sample(id="zoom", prompt="[zoom] What colour is the right half?", images=[_image()]),
            Sample(id="bad", prompt="[bad] What colour?", images=[_image()]),
            Sample(id="two", prompt="[two] Compare the images.", images=[_image(), _image(100, 80)]),
            Sample(id="none", prompt="[none] What is 1 + 2?")]


@pytest.fixture(scope="module")
def vlm_traj(vlm):
    engine = MultiTurnEngine(ScriptedEngine(vlm, VLM_SCRIPTS), max_tool_rounds=2)
    assert isinstance(engine, RolloutEngine)
    return engine.generate(_vlm_samples(), SamplingParams(n=1, temperature=0.0, max_new_tokens=200))


def _manual_logprobs(bundle, traj, row: int) -> torch.Tensor:
    """Reference: row ``row`` unpadded through the model's ordinary forward, observation images
    appended after the prompt's."""
    ctx = render_prompt(bundle, traj.sample_of(row))
    n = int(traj.attention_mask[row].sum())
    resp = traj.response_ids[row, :n]
    ids = torch.cat([ctx["input_ids"], resp])[None]
    pad = bundle.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    obs = traj.response_images[row]
    kwargs = {"pixel_values": torch.cat([ctx["pixel_values"]] + [o.pixel_values for o in obs]),
              "image_grid_thw": torch.cat([ctx["image_grid_thw"]] + [o.image_grid_thw for o in obs]),
              "mm_token_type_ids": torch.cat([ctx["mm_token_type_ids"], (resp == pad).long()])[None]}
    with torch.no_grad():
        logits = bundle.model(input_ids=ids, **kwargs).logits[0].float()
    p = ctx["input_ids"].numel()
    return logits[p - 1:p - 1 + n].log_softmax(-1).gather(-1, resp[:, None]).squeeze(-1) * traj.response_mask[row, :n]


def test_tool_rollout_masks_images_and_texts(vlm, vlm_traj):
    traj = vlm_traj
    mask, valid = traj.response_mask, traj.response_valid
    assert traj.attention_mask is valid and valid.shape == mask.shape == traj.old_logp.shape
    assert (mask <= valid).all()
    obs = (valid == 1) & (mask == 0)
    assert obs.sum(1).tolist()[3] == 0 and (obs.sum(1)[:3] > 0).all()
    assert (traj.old_logp[obs] == 0).all() and (traj.old_logp[valid == 0] == 0).all()
    assert (traj.old_logp[mask == 1] < 0).all()
    assert [len(x) for x in traj.response_images] == [2, 0, 2, 0]
    assert all(im.processor_key == processor_key(vlm) for im in traj.response_images[0])
    # the first crop of row 0 is the blue top-right 32 x 32 region; the second crops that crop
    assert traj.response_images[0][0].image.size == (32, 32)
    assert traj.response_images[0][0].image.getpixel((3, 3)) == (30, 30, 200)
    assert traj.response_images[0][1].image.size == (28, 42)  # 20 x 30 scaled to a 28-pixel short side
    assert traj.response_images[2][1].image.size == (30, 40)  # target_image 3 = row 2's first crop (80 x 60)
    # observation tokens: image pads only there, as many as the processed images need
    pad = vlm.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for r in range(4):
        pads = (traj.response_ids[r] == pad) & valid[r].bool()
        assert not (pads & mask[r].bool()).any()
        assert int(pads.sum()) == sum(im.n_tokens for im in traj.response_images[r])
    calls = traj.extras["tool_calls"]
    assert [c["error"] for c in calls[0]] == [False, False] and [c["error"] for c in calls[1]] == [True, True]
    assert "empty or outside image 1" in calls[1][0]["observation"]
    assert calls[1][1]["observation"].startswith("Error: tool call is not valid JSON") and calls[3] == []
    # texts hold the decoded full trajectory; the final answer is at its end
    assert traj.texts[0].startswith("Zoom. <tool_call>") and traj.texts[0].endswith("It is blue.")
    assert "<tool_response>\nCropped region [32, 0, 64, 32] of image 1.\n</tool_response>" in traj.texts[0]
    assert traj.texts[1].endswith("I am not sure.") and traj.texts[3] == "No tools: 3."
    # generated segments end with </tool_call> and the final EOS; observations follow the chat format
    tok = vlm.tokenizer
    n0 = int(valid[0].sum())
    ids = traj.response_ids[0, :n0].tolist()
    assert ids[-1] in vlm.eos_token_ids and mask[0, n0 - 1] == 1
    first_obs = int(obs[0].long().argmax())
    assert tok.decode(ids[:first_obs]).endswith("</tool_call>")
    obs_end = first_obs + int(obs[0, first_obs:].long().argmin())
    rendered, _ = render_observation(vlm, Observation("Cropped region [32, 0, 64, 32] of image 1.",
                                                      [traj.response_images[0][0].image]))
    assert ids[first_obs:obs_end] == rendered


def test_scorers_see_the_full_trajectory(vlm, teacher, vlm_traj):
    traj = vlm_traj
    scored = token_logprobs(vlm, traj)
    assert scored.shape == traj.response_ids.shape and scored.dtype == torch.float32
    assert torch.allclose(scored, traj.old_logp, atol=ATOL)  # token for token what the policy saw
    assert (scored[traj.response_mask == 0] == 0).all()
    assert torch.allclose(token_logprobs(vlm, traj, micro_batch_size=1), scored, atol=ATOL)
    for row in (0, 2):
        n = int(traj.attention_mask[row].sum())
        assert torch.allclose(scored[row, :n], _manual_logprobs(vlm, traj, row), atol=ATOL)
    # select_rows keeps each row's observation images with it
    sub = select_rows(traj, [2, 0])
    assert torch.allclose(token_logprobs(vlm, sub), scored[[2, 0]], atol=ATOL)
    # a teacher's log-probs are aligned to the same (B, T) columns
    t_scored = token_logprobs(teacher, traj)
    assert t_scored.shape == scored.shape and (t_scored[traj.response_mask == 0] == 0).all()
    assert (t_scored[traj.response_mask == 1] < 0).all() and not torch.allclose(t_scored, scored, atol=1e-2)
    n = int(traj.attention_mask[2].sum())
    assert torch.allclose(t_scored[2, :n], _manual_logprobs(teacher, traj, 2), atol=ATOL)
    hidden, weight = response_hidden_states(teacher, traj)
    assert (hidden[traj.response_mask == 0] == 0).all()
    logits_lp = (hidden @ weight.T).float().log_softmax(-1).gather(-1, traj.response_ids[..., None]).squeeze(-1)
    assert torch.allclose(logits_lp * traj.response_mask, t_scored, atol=ATOL)


def test_scorers_that_cannot_align_observations_refuse(vlm, vlm_traj):
    with pytest.raises(ValueError, match="removes the images"):
        token_logprobs(vlm, vlm_traj, "text_only")
    with pytest.raises(ValueError, match="removes the images"):
        token_logprobs(vlm, vlm_traj, "text_only+hint")
    other = dataclasses.replace(vlm, processor=tiny_image_processor("qwen3_vl"))  # patch 16, not 14
    with pytest.raises(ValueError, match="image processor .* differs"):
        token_logprobs(other, vlm_traj)
    text_model = load_model(str(smoke_model_path("qwen3")))
    with pytest.raises(ValueError, match="text-only model"):
        token_logprobs(text_model, select_rows(vlm_traj, [3, 0]))
    with pytest.raises(ValueError, match="removes the images"):  # a callable view that drops them
        token_logprobs(text_model, select_rows(vlm_traj, [3, 0]), lambda s: dataclasses.replace(s, images=[]))
    # rows without image observations are fine for every scorer
    plain = select_rows(vlm_traj, [3])
    lp = token_logprobs(text_model, plain, "text_only")
    assert lp.shape == plain.response_ids.shape and (lp[plain.response_mask == 1] < 0).all()


# ---------------------------------------------------------------------- text tools
@pytest.fixture(scope="module")
def text_model():
    return load_model(str(smoke_model_path("qwen3")))


def test_calculator_rollout_on_a_text_model(text_model):
    scripts = {"[calc]": [call("calculate", expression="12 * (3 + 4)"), "So \\boxed{84}."],
               "[limit]": [call("calculate", expression="2 ** 10"), call("calculate", expression="1 / 0"), "Done."]}
    samples = [Sample(id="c", prompt="[calc] What is 12 * (3 + 4)?"), Sample(id="l", prompt="[limit] Go.")]
    engine = MultiTurnEngine(ScriptedEngine(text_model, scripts), tools=["calculate"], max_tool_rounds=1)
    traj = engine.generate(samples, SamplingParams(n=1, temperature=0.0, max_new_tokens=120))
    assert "<tool_response>\n12 * (3 + 4) = 84\n</tool_response>" in traj.texts[0]
    assert traj.texts[0].endswith("So \\boxed{84}.")
    # max_tool_rounds=1: the second call is written in the final round but never executed
    assert [c["observation"] for c in traj.extras["tool_calls"][1]] == ["2 ** 10 = 1024"]
    assert traj.texts[1].endswith(call("calculate", expression="1 / 0"))
    assert traj.response_images == [[], []]
    obs = (traj.response_valid == 1) & (traj.response_mask == 0)
    assert (obs.sum(1) > 0).all() and (traj.old_logp[obs] == 0).all()
    assert torch.allclose(token_logprobs(text_model, traj), traj.old_logp, atol=ATOL)
    n = int(traj.response_valid[0].sum())
    expected = (text_model.tokenizer.encode(observation_text(Observation("12 * (3 + 4) = 84")),
                                            add_special_tokens=False))
    ids = traj.response_ids[0, :n].tolist()
    start = int(obs[0].long().argmax())
    assert ids[start:start + len(expected)] == expected


def test_without_tool_calls_the_rollout_is_the_single_turn_one(text_model):
    samples = [Sample(id="a", prompt="What is 2 + 3?"), Sample(id="b", prompt="Name a colour.")]
    sampling = SamplingParams(n=2, temperature=1.0, max_new_tokens=12, seed=5)
    single = HFRolloutEngine(text_model, progress=False).generate(samples, sampling)
    multi = MultiTurnEngine(HFRolloutEngine(text_model, progress=False)).generate(samples, sampling)
    assert torch.equal(single.response_ids, multi.response_ids)
    assert torch.equal(single.response_mask, multi.response_mask)
    assert torch.equal(multi.response_valid, multi.response_mask)
    assert torch.allclose(single.old_logp, multi.old_logp) and single.texts == multi.texts


def test_first_stop_finds_the_shortest_prefix(text_model):
    tok = text_model.tokenizer
    ids = tok.encode("abc " + call("calculate", expression="1") + " tail", add_special_tokens=False)
    m = first_stop(tok, ids, "</tool_call>")
    assert tok.decode(ids[:m]).endswith("</tool_call>") and "</tool_call>" not in tok.decode(ids[:m - 1])
    assert first_stop(tok, ids[:m - 1], "</tool_call>") is None and first_stop(tok, [], "x") is None
