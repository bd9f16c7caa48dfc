"""HF rollouts and per-token scoring: log-prob agreement, view alignment, batching, determinism."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from harness.models import PolicyBundle, build_tiny_model, load_model
from harness.rollout.base import RolloutEngine
from harness.rollout.hf import HFRolloutEngine, response_mask_until_eos
from harness.scoring import apply_view, render_prompt, response_hidden_states, token_logprobs
from harness.tiny import TINY_KINDS
from harness.types import Sample, SamplingParams, Trajectories

ATOL = 1e-4


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, PolicyBundle]:
    root = tmp_path_factory.mktemp("tiny")
    out = {k: load_model(build_tiny_model(k, root / k, seed=i)) for i, k in enumerate(TINY_KINDS)}
    for k in ("qwen2_5_vl", "qwen3_vl"):  # a variant that often emits EOS: variable-length responses
        eos_prone = copy.deepcopy(out[k])
        head = eos_prone.model.get_output_embeddings().weight
        with torch.no_grad():
            head[eos_prone.eos_token_ids[0]] *= 12.0
        out[k + "_eos"] = eos_prone
    return out


def _samples() -> list[Sample]:
    red = Image.new("RGB", (64, 48), (220, 20, 20))
    blue = Image.new("RGB", (120, 90), (20, 20, 220))
    return [
        Sample(id="img", prompt="What colour is the square? Answer with one word.", images=[red]),
        Sample(id="txt", prompt="Compute 12 + 7.", hint="Add the units first."),
        Sample(id="two", prompt="Which image is larger? Answer: A or B", images=[blue, red],
               system="You are a careful grader."),
        Sample(id="long", prompt="Let x = 3. " * 6 + "Find x^2.", hint="Square it."),
    ]


def _samples_for(bundle: PolicyBundle) -> list[Sample]:
    return _samples() if bundle.is_vlm else [apply_view(s, "text_only") for s in _samples()]


def _manual_logprobs(bundle: PolicyBundle, traj: Trajectories, row: int, view="full") -> torch.Tensor:
    """Reference: one unpadded sequence through the model's ordinary forward (no collate)."""
    ctx = render_prompt(bundle, traj.sample_of(row), view)
    n = int(traj.response_mask[row].sum())
    resp = traj.response_ids[row, :n]
    ids = torch.cat([ctx["input_ids"], resp])[None]
    kwargs = {k: v for k, v in ctx.items() if k in ("pixel_values", "image_grid_thw")}
    if "mm_token_type_ids" in ctx:
        kwargs["mm_token_type_ids"] = torch.cat([ctx["mm_token_type_ids"], torch.zeros(n, dtype=torch.long)])[None]
    with torch.no_grad():
        logits = bundle.model(input_ids=ids, **kwargs).logits[0].float()
    p = ctx["input_ids"].numel()
    return logits[p - 1:p - 1 + n].log_softmax(-1).gather(-1, resp[:, None]).squeeze(-1)


def test_engine_satisfies_protocol(bundles):
    assert isinstance(HFRolloutEngine(bundles["qwen3"]), RolloutEngine)


@pytest.mark.parametrize("kind", ["qwen2_5_vl_eos", "qwen3_vl_eos", "qwen3"])
def test_rollout_logprobs_equal_scorer_logprobs(bundles, kind):
    bundle = bundles[kind]
    samples = _samples_for(bundle)
    sampling = SamplingParams(n=3, temperature=0.7, top_p=0.9, max_new_tokens=10, seed=1)
    traj = HFRolloutEngine(bundle, batch_size=2, progress=False).generate(samples, sampling)
    b = len(samples) * 3
    assert traj.response_ids.shape[0] == b and traj.prompt_ids.shape[0] == b
    assert traj.group_ids.tolist() == [g for g in range(len(samples)) for _ in range(3)]
    lengths = traj.response_mask.sum(1)
    if kind.endswith("_eos"):  # EOS ended some rows early: padding inside the batch is exercised
        assert lengths.min() < lengths.max()
    scored = token_logprobs(bundle, traj)
    assert scored.dtype == torch.float32 and scored.shape == traj.response_ids.shape
    assert torch.allclose(scored, traj.old_logp, atol=ATOL)
    assert (traj.old_logp[traj.response_mask == 0] == 0).all() and (traj.old_logp[traj.response_mask == 1] < 0).all()
    # micro-batching does not change the values; the unpadded reference forward agrees too
    assert torch.allclose(token_logprobs(bundle, traj, micro_batch_size=2), scored, atol=ATOL)
    for row in (0, b - 1):
        n = int(lengths[row])
        assert torch.allclose(scored[row, :n], _manual_logprobs(bundle, traj, row), atol=ATOL)


def test_response_mask_and_texts(bundles):
    bundle = bundles["qwen2_5_vl_eos"]
    traj = HFRolloutEngine(bundle, progress=False).generate(
        _samples(), SamplingParams(n=4, temperature=1.0, max_new_tokens=12, seed=0))
    eos = set(bundle.eos_token_ids)
    for row in range(len(traj)):
        n = int(traj.response_mask[row].sum())
        ids = traj.response_ids[row].tolist()
        assert traj.response_mask[row, :n].all() and not traj.response_mask[row, n:].any()
        ended = any(i in eos for i in ids[:n])
        assert ended == (ids[n - 1] in eos)  # mask includes the EOS and nothing after it
        assert not any(i in eos for i in ids[:n - 1])
        assert ended or n == 12
        assert traj.texts[row] == bundle.tokenizer.decode(ids[:n], skip_special_tokens=True)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=8), min_size=1, max_size=4).map(
    lambda rows: [r + [0] * (8 - len(r)) for r in rows]))
def test_response_mask_until_eos_property(rows):
    response = torch.tensor(rows)
    mask = response_mask_until_eos(response, [1, 2])
    for r, m in zip(rows, mask.tolist()):
        first = next((i for i, t in enumerate(r) if t in (1, 2)), None)
        expected = len(r) if first is None else first + 1
        assert m == [1] * expected + [0] * (len(r) - expected)


@pytest.mark.parametrize("kind", ["qwen2_5_vl", "qwen3_vl"])
def test_greedy_is_deterministic_and_batched_equals_unbatched(bundles, kind):
    bundle = bundles[kind]
    samples = _samples()
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=10)
    batched = HFRolloutEngine(bundle, batch_size=4, progress=False).generate(samples, greedy)
    again = HFRolloutEngine(bundle, batch_size=4, progress=False).generate(samples, greedy)
    assert torch.equal(batched.response_ids, again.response_ids)
    for i, s in enumerate(samples):
        single = HFRolloutEngine(bundle, batch_size=1, progress=False).generate([s], greedy)
        n = int(single.response_mask[0].sum())
        assert torch.equal(batched.response_ids[i, :n], single.response_ids[0, :n])
        assert torch.allclose(batched.old_logp[i, :n], single.old_logp[0, :n], atol=ATOL)
    # greedy picks the argmax of the scorer's distribution at every position
    hidden, weight = response_hidden_states(bundle, batched)
    argmax = (hidden @ weight.T).argmax(-1)
    m = batched.response_mask.bool()
    assert torch.equal(argmax[m], batched.response_ids[m])


def test_seeded_sampling_is_reproducible(bundles):
    engine = HFRolloutEngine(bundles["qwen3"], progress=False)
    samples = _samples_for(bundles["qwen3"])
    a = engine.generate(samples, SamplingParams(n=2, temperature=1.0, max_new_tokens=8, seed=3))
    b = engine.generate(samples, SamplingParams(n=2, temperature=1.0, max_new_tokens=8, seed=3))
    c = engine.generate(samples, SamplingParams(n=2, temperature=1.0, max_new_tokens=8, seed=4))
    assert torch.equal(a.response_ids, b.response_ids) and not torch.equal(a.response_ids, c.response_ids)
    # n samples of one prompt differ from each other (sampling, not copies)
    assert not torch.equal(a.response_ids[0], a.response_ids[1])


def test_text_teacher_scores_vlm_students_tokens_under_text_only_view(bundles):
    student, teacher = bundles["qwen2_5_vl_eos"], bundles["qwen3"]
    samples = _samples()
    traj = HFRolloutEngine(student, progress=False).generate(
        samples, SamplingParams(n=2, temperature=1.0, max_new_tokens=10, seed=5))
    with pytest.raises(ValueError, match="text_only"):
        token_logprobs(teacher, traj, view="full")
    t_logp = token_logprobs(teacher, traj, view="text_only")
    s_text = token_logprobs(student, traj, view="text_only")
    s_full = token_logprobs(student, traj, view="full")
    assert t_logp.shape == s_full.shape == traj.response_ids.shape
    mask = traj.response_mask.bool()
    assert (t_logp[~mask] == 0).all() and (t_logp[mask] < 0).all()
    # contexts differ (no image tokens for the teacher) ...
    image_pad = student.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    full_ctx = render_prompt(student, samples[0], "full")["input_ids"]
    text_ctx = render_prompt(teacher, samples[0], "text_only")["input_ids"]
    assert (full_ctx == image_pad).sum() > 0 and (text_ctx == image_pad).sum() == 0
    # ... the image changes the student's log-probs on image rows only ...
    has_image = torch.tensor([traj.sample_of(r).has_image for r in range(len(traj))])
    assert not torch.allclose(s_text[has_image], s_full[has_image], atol=1e-3)
    assert torch.allclose(s_text[~has_image], s_full[~has_image], atol=ATOL)
    # composite view: the text teacher with the privileged hint
    with_hint = token_logprobs(teacher, traj, view="text_only+hint")
    hinted = torch.tensor([bool(traj.sample_of(r).hint) for r in range(len(traj))])
    assert not torch.allclose(with_hint[hinted], t_logp[hinted], atol=1e-3)
    assert torch.allclose(with_hint[~hinted], t_logp[~hinted], atol=ATOL)
    row = int(hinted.nonzero()[0])
    n = int(mask[row].sum())
    assert torch.allclose(with_hint[row, :n], _manual_logprobs(teacher, traj, row, "text_only+hint"), atol=ATOL)
    # ... and the teacher's values are its own log-probs of exactly those response tokens
    for row in range(len(traj)):
        n = int(mask[row].sum())
        assert torch.allclose(t_logp[row, :n], _manual_logprobs(teacher, traj, row, "text_only"), atol=ATOL)


def test_hint_and_callable_views(bundles):
    bundle = bundles["qwen3"]
    samples = _samples_for(bundle)
    traj = HFRolloutEngine(bundle, progress=False).generate(
        samples, SamplingParams(n=1, temperature=1.0, max_new_tokens=6, seed=2))
    full, hint = token_logprobs(bundle, traj), token_logprobs(bundle, traj, view="hint")
    ctx = render_prompt(bundle, samples[1], "hint")["input_ids"]
    assert "Add the units first." in bundle.tokenizer.decode(ctx)
    has_hint = torch.tensor([bool(s.hint) for s in samples])
    assert has_hint.any() and not has_hint.all()
    assert not torch.allclose(full[has_hint], hint[has_hint], atol=1e-3)
    assert torch.allclose(full[~has_hint], hint[~has_hint], atol=ATOL)  # no hint: same context
    upper = lambda s: dataclasses.replace(s, prompt=s.prompt.upper())  # noqa: E731
    shouted = token_logprobs(bundle, traj, view=upper)
    assert not torch.allclose(shouted, full, atol=1e-3)
    for row in range(len(traj)):
        assert torch.allclose(shouted[row], _manual_logprobs(bundle, traj, row, upper), atol=ATOL)
    # callable views are not cached: another callable gives its own values
    assert torch.allclose(token_logprobs(bundle, traj, view=lambda s: s), full, atol=ATOL)
    with pytest.raises(ValueError, match="unknown view"):
        token_logprobs(bundle, traj, view="no_such_view")


def test_render_prompt_expands_image_placeholders(bundles):
    bundle = bundles["qwen2_5_vl"]
    two = _samples()[2]
    out = render_prompt(bundle, two)
    grid = out["image_grid_thw"]
    pad = bundle.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert grid.shape == (2, 3)
    assert int((out["input_ids"] == pad).sum()) == int(grid.prod(-1).sum()) // 4
    assert out["pixel_values"].shape[0] == int(grid.prod(-1).sum())
    assert torch.equal(out["mm_token_type_ids"], (out["input_ids"] == pad).long())
    assert "You are a careful grader." in bundle.tokenizer.decode(out["input_ids"])


def test_hidden_states_and_gradients(bundles):
    bundle = bundles["qwen2_5_vl_eos"]
    traj = HFRolloutEngine(bundle, progress=False).generate(
        _samples(), SamplingParams(n=2, temperature=1.0, max_new_tokens=8, seed=0))
    hidden, weight = response_hidden_states(bundle, traj)
    mask = traj.response_mask.bool()
    from_hidden = (hidden @ weight.T).float().log_softmax(-1).gather(-1, traj.response_ids[..., None]).squeeze(-1)
    assert torch.allclose(from_hidden[mask], traj.old_logp[mask], atol=ATOL)
    assert (hidden[~mask] == 0).all() and not hidden.requires_grad
    bundle.model.zero_grad(set_to_none=True)
    rows = dataclasses.replace(traj, response_ids=traj.response_ids[[1, 2]], response_mask=traj.response_mask[[1, 2]],
                               group_ids=traj.group_ids[[1, 2]])
    logp = token_logprobs(bundle, rows, grad=True, micro_batch_size=1)
    assert logp.requires_grad and torch.allclose(logp.detach(), traj.old_logp[[1, 2]], atol=ATOL)
    logp.sum().backward()
    grads = {n: p.grad for n, p in bundle.model.named_parameters()}
    assert all(g is None for n, g in grads.items() if "visual" in n.split("."))
    assert grads["lm_head.weight"] is not None and grads["lm_head.weight"].abs().sum() > 0
    bundle.model.zero_grad(set_to_none=True)


def test_placeholder_tokens_are_never_sampled(bundles):
    bundle = copy.deepcopy(bundles["qwen2_5_vl"])
    pad = bundle.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    with torch.no_grad():
        bundle.model.get_output_embeddings().weight[pad] *= 12.0  # now a likely token
    sampling = SamplingParams(n=4, temperature=1.0, max_new_tokens=12, seed=0)
    traj = HFRolloutEngine(bundle, progress=False).generate(_samples(), sampling)
    banned = bundle.tokenizer.convert_tokens_to_ids(["<|image_pad|>", "<|video_pad|>", "<|vision_start|>"])
    assert not torch.isin(traj.response_ids[traj.response_mask.bool()], torch.tensor(banned)).any()
    assert torch.allclose(token_logprobs(bundle, traj), traj.old_logp, atol=ATOL)  # still the raw log-probs
    traj.response_ids[0, 0] = pad
    with pytest.raises(ValueError, match=r"response row 0 contains <\|image_pad\|>"):
        token_logprobs(bundle, traj)


def test_without_logprobs_the_same_tokens_and_zero_old_logp(bundles):
    """``SamplingParams(logprobs=False)`` (evaluation) skips the recorder: same responses, zeros."""
    engine = HFRolloutEngine(bundles["qwen2_5_vl"], batch_size=2, progress=False)
    for temperature in (0.0, 1.0):
        with_lp = engine.generate(_samples(), SamplingParams(n=2, temperature=temperature, max_new_tokens=6, seed=3))
        without = engine.generate(_samples(), SamplingParams(n=2, temperature=temperature, max_new_tokens=6, seed=3,
                                                             logprobs=False))
        assert torch.equal(with_lp.response_ids, without.response_ids) and with_lp.texts == without.texts
        assert (without.old_logp == 0).all() and (with_lp.old_logp[with_lp.response_mask.bool()] < 0).all()
