"""VOLD's teacher on real (tiny) models: it scores the student's own tokens from the text-only view
of the prompt, aligned token by token; a teacher with another vocabulary is refused; with beta = 0
the VOLD method's loss is GRPO's exactly (methods/vold/trainer.py)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from harness.distributed import Strategy
from harness.models import VocabularyMismatchError, build_tiny_model, load_model, smoke_model_path
from harness.scoring import render_prompt
from harness.update import Normalizers
from methods.grpo.trainer import GRPO
from methods.vold import load_stage_config
from methods.vold.trainer import VOLD, load_vold_teacher
from trainer_helpers import visual_rollouts


@pytest.fixture(scope="module")
def student():
    return load_model(smoke_model_path("qwen2_5_vl"))


@pytest.fixture(scope="module")
def rollouts(student):
    return visual_rollouts(student, seed=5, sample_seed=0, max_new_tokens=5, rewards=[0.0, 1.0, 1.0, 0.0])


def rl_config(**kw):
    base = {"teacher": str(smoke_model_path("qwen3")), "val_every": 0}
    return load_stage_config("rl", "smoke", {**base, **kw})


def ctx_for(policy, cfg):
    return SimpleNamespace(policy=policy, strategy=Strategy("cpu"), cfg=cfg)


def test_teacher_scores_the_students_tokens_from_the_text_only_view(student, rollouts):
    cfg = rl_config()
    method = VOLD(cfg)
    ctx = ctx_for(student, cfg)
    method.setup(ctx)
    assert method.teacher is not None and not method.teacher.is_vlm
    method.prepare(rollouts, ctx, 0)
    got = rollouts.extras["teacher_logp"]
    teacher = method.teacher
    for row in range(len(rollouts)):
        sample = rollouts.sample_of(row)
        student_ctx = render_prompt(student, sample, "full")["input_ids"]
        image_pad = student.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        assert (student_ctx == image_pad).any()  # the student's context holds the image
        # the teacher's context, built by hand: its chat template on the question alone
        messages = [{"role": "user", "content": sample.prompt}]
        text = teacher.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        t_ctx = teacher.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert image_pad not in t_ctx and len(t_ctx) < len(student_ctx)
        n = int(rollouts.response_mask[row].sum())
        resp = rollouts.response_ids[row, :n].tolist()
        with torch.no_grad():
            logits = teacher.model(input_ids=torch.tensor([t_ctx + resp])).logits[0].float()
        lp = torch.log_softmax(logits[len(t_ctx) - 1:len(t_ctx) - 1 + n], -1)
        expect = lp.gather(-1, torch.tensor(resp)[:, None]).squeeze(-1)
        assert torch.allclose(got[row, :n], expect, atol=1e-4), row
        assert torch.all(got[row, n:] == 0)


def test_the_text_only_teacher_cannot_be_given_the_image(student, rollouts):
    cfg = rl_config(teacher_view="full")
    method = VOLD(cfg)
    ctx = ctx_for(student, cfg)
    method.setup(ctx)
    with pytest.raises(ValueError, match="text-only model"):
        method.prepare(rollouts, ctx, 0)


def test_a_teacher_with_another_vocabulary_is_refused(student, tmp_path):
    path = build_tiny_model("qwen3", tmp_path / "teacher", seed=3)
    other = load_model(path)
    other.model.resize_token_embeddings(len(other.tokenizer) + 16)
    other.model.save_pretrained(path)
    with pytest.raises(VocabularyMismatchError, match="vocab"):
        cfg = rl_config(teacher=str(path))
        load_vold_teacher(cfg, ctx_for(student, cfg))


def test_beta_zero_loads_no_teacher_and_gives_the_grpo_loss(student, rollouts):
    cfg = rl_config(beta=0.0, teacher="/nonexistent/teacher")
    vold, grpo = VOLD(cfg), GRPO(cfg)
    ctx = ctx_for(student, cfg)
    vold.setup(ctx)
    grpo.setup(ctx)
    assert vold.teacher is None
    vold.prepare(rollouts, ctx, 0)
    norm = Normalizers(global_tokens=float(rollouts.response_mask.sum()), global_seqs=float(len(rollouts)))
    logp = (rollouts.old_logp + 0.05 * torch.randn(rollouts.old_logp.shape)).requires_grad_(True)
    fwd = {"full": SimpleNamespace(logp=logp)}
    lv, _ = vold.loss(fwd, rollouts, norm, 0)
    (gv,) = torch.autograd.grad(lv, logp)
    lg, _ = grpo.loss(fwd, rollouts, norm, 0)
    (gg,) = torch.autograd.grad(lg, logp)
    assert torch.equal(lv, lg) and torch.equal(gv, gg)


def test_full_vocabulary_kl_runs_on_the_model(student, rollouts):
    """kl_estimator=full_reverse: teacher hidden states from the text-only view, the student's with
    grad; the loss backpropagates into the student's parameters."""
    cfg = rl_config(kl_estimator="full_reverse", beta=1.0)
    method = VOLD(cfg)
    ctx = ctx_for(student, cfg)
    method.setup(ctx)
    method.prepare(rollouts, ctx, 0)
    assert rollouts.extras["teacher_hidden"].shape[:2] == rollouts.response_ids.shape
    from harness.forward import policy_forward

    fwd = policy_forward(student, rollouts, method.views)
    norm = Normalizers(global_tokens=float(rollouts.response_mask.sum()), global_seqs=float(len(rollouts)))
    loss, stats = method.loss(fwd, rollouts, norm, 0)
    assert float(stats["kl_token_mean"]) > 0
    student.model.zero_grad()
    loss.backward()
    head = student.model.get_output_embeddings().weight
    assert head.grad is not None and float(head.grad.abs().sum()) > 0
    student.model.zero_grad()
