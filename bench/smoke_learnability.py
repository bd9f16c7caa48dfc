"""Can a smoke model learn the easy-vqa visual task at all? (a controlled experiment, not a test)

Under smoke version v3 the smoke tables showed no trained row above the base row
(docs/smoke_profile.md). This script separates the two suspects, the images and v3's format-only
warm start, with the strongest signal
there is: *supervised* colour naming with the correct labels (free form, ``\\boxed{teal}``), which
any RL run on the same task can only learn more slowly.

Arms (fixed before the run, one seed; real Qwen vocabulary):
  raw / full      the tiny Qwen2.5-VL at its random weights (``qwen2_5_vl_raw``), easy-vqa images as shipped
  raw / cropped   the same on images cropped to the shape (``harness.data.packaged.crop_to_shape``)
  warm / cropped  the warm-started smoke student (``qwen2_5_vl``, the base row of every smoke table;
                  the recorded numbers are v3's, a rerun loads the current version's)
Each: ``--steps`` AdamW steps of 32 training questions (lr 3e-3, vision tower frozen, full softmax
over the response tokens), then greedy accuracy of the answer token on 100 held-out validation
questions, every 20 steps. Also printed per arm, before training: the RMS of the residual stream
entering the final norm at the position that predicts the answer, and its RMS *between images*
(the part that depends on the picture): their ratio is how much of what reaches the answer is the
image.

    OMP_NUM_THREADS=2 PYTHONPATH=. python bench/smoke_learnability.py [--steps 60]

Measured (2-core CPU, 2026-12-02): docs/smoke_profile.md, "Why nothing learns".
"""
from __future__ import annotations

import argparse
import time

import torch

from harness.data.packaged import easy_vqa
from harness.models import load_model, smoke_model_path
from harness.scoring import encode_pairs, response_hidden_states
from harness.types import Sample

BATCH, LR, N_VAL = 32, 3e-3, 100


def answer_position(bundle, sample: Sample, ids: list[int]) -> int:
    """Index in the response of the first token of the answer word (after ``\\boxed{``)."""
    tok = bundle.tokenizer
    return next(k for k in range(len(ids)) if sample.answer[:2] in tok.decode(ids[:k + 1]))


def answer_accuracy(bundle, samples: list[Sample]) -> float:
    """Share of samples whose answer token is the argmax at its position (teacher-forced prefix)."""
    bundle.model.eval()
    with torch.no_grad():
        batch = encode_pairs(bundle, samples)
        hidden, weight = response_hidden_states(bundle, batch)
    hits = 0
    for i, s in enumerate(samples):
        ids = batch.response_ids[i].tolist()
        k = answer_position(bundle, s, ids)
        hits += int((hidden[i, k] @ weight.T).argmax().item() == ids[k])
    bundle.model.train()
    return hits / len(samples)


def image_share(bundle, samples: list[Sample]) -> tuple[float, float]:
    """(RMS of the residual stream entering the final norm at the answer-predicting position, its
    RMS across images), the position of each sample's answer token."""
    lm = bundle.model.model.language_model
    seen = {}
    hook = lm.norm.register_forward_hook(lambda mod, inp, out: seen.__setitem__("x", inp[0].detach()))
    batch = encode_pairs(bundle, samples)
    with torch.no_grad():
        response_hidden_states(bundle, batch)
    hook.remove()
    prompt_len = batch.prompt_ids.shape[1]
    rows = [seen["x"][i, prompt_len - 1 + answer_position(bundle, s, batch.response_ids[i].tolist())]
            for i, s in enumerate(samples)]
    x = torch.stack(rows)
    return x.pow(2).mean().sqrt().item(), (x - x.mean(0)).pow(2).mean().sqrt().item()


def run_arm(kind: str, crop: bool, steps: int) -> dict:
    torch.manual_seed(0)
    bundle = load_model(smoke_model_path(kind), dtype="float32", device="cpu")
    for name, p in bundle.model.named_parameters():
        p.requires_grad_("visual" not in name)
    train = easy_vqa(steps * BATCH, "train", seed=5, kinds=("color",), form="free", crop=crop)
    val = easy_vqa(N_VAL, "validation", seed=1, kinds=("color",), form="free", crop=crop)
    total, between = image_share(bundle, val[:32])
    opt = torch.optim.AdamW([p for p in bundle.model.parameters() if p.requires_grad], lr=LR, weight_decay=0.0)
    curve = {0: answer_accuracy(bundle, val)}
    start = time.time()
    for step in range(steps):
        batch = encode_pairs(bundle, train[step * BATCH:(step + 1) * BATCH])
        hidden, weight = response_hidden_states(bundle, batch, grad=True)
        logp = torch.log_softmax((hidden @ weight.T).float(), -1)
        logp = logp.gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1)
        loss = -(logp * batch.response_mask).sum() / batch.response_mask.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 20 == 0 or step + 1 == steps:
            curve[step + 1] = answer_accuracy(bundle, val)
    return {"rms": total, "image_rms": between, "curve": curve, "seconds": time.time() - start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    arms = [("raw / full", "qwen2_5_vl_raw", False), ("raw / cropped", "qwen2_5_vl_raw", True),
            ("warm / cropped", "qwen2_5_vl", True)]
    print(f"supervised colour naming, {args.steps} steps x {BATCH}, lr {LR}; accuracy on {N_VAL} validation "
          f"questions (chance 0.125)")
    print("| arm | residual RMS at the answer | of which between images | ratio | accuracy by step | train s |")
    print("|---|---|---|---|---|---|")
    for label, kind, crop in arms:
        r = run_arm(kind, crop, args.steps)
        curve = ", ".join(f"{s}: {a:.2f}" for s, a in r["curve"].items())
        print(f"| {label} | {r['rms']:.3f} | {r['image_rms']:.4f} | {r['image_rms'] / r['rms']:.3f} | {curve} | "
              f"{r['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
