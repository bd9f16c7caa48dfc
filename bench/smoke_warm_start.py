"""Which warm start leaves a smoke model able to learn the visual task? (an experiment, not a test)

Smoke version v3's warm start (``harness.warm_start``, ``targets="random"``) saturated the answer
position and nothing learnt from it afterwards (``bench/smoke_learnability.py``). This script
measures the alternative, which v4 made the default: the same sampled-softmax warm start on the **correct** answers of
easy-vqa questions with images cropped to the shape (``WarmStart(targets="gold", crop=True)``),
probed every 10 steps, then -- from the model at ``--stop`` steps -- supervised training with the
correct answers and the full softmax (batch 16, lr ``--lr``, vision tower frozen), probed every
20 steps. The probe is the greedy answer-token accuracy (teacher-forced prefix) on 50 validation
questions of each kind and form: colour / shape, free form / multiple choice (the fixed option
order of ``harness.data.packaged.easy_vqa_options``); chance 0.125 / 0.33.

    OMP_NUM_THREADS=2 PYTHONPATH=. python bench/smoke_warm_start.py [--stop 80 --sft-steps 100 --lr 1e-3]

Measured (2-core CPU, 2026-12-03): docs/smoke_profile.md, "An early-stopped warm start".
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from smoke_learnability import answer_accuracy  # noqa: E402

from harness.data.packaged import easy_vqa  # noqa: E402
from harness.models import load_model, smoke_model_path  # noqa: E402
from harness.optim import build_optimizer  # noqa: E402
from harness.scoring import encode_pairs, response_hidden_states  # noqa: E402
from harness.warm_start import WarmStart, warm_start  # noqa: E402

KINDS = [(k, f) for k in ("color", "shape") for f in ("free_form", "multiple_choice")]


def probe(bundle, val) -> str:
    cells = []
    for kind, form in KINDS:
        rows = [s for s in val if s.meta["kind"] == kind and s.answer_type == form][:50]
        cells.append(f"{kind} {form.split('_')[0]} {answer_accuracy(bundle, rows):.2f}")
    return ", ".join(cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stop", type=int, default=80, help="warm-start steps (gold answers, cropped images)")
    ap.add_argument("--sft-steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3, help="learning rate of the supervised run")
    args = ap.parse_args()
    torch.manual_seed(0)
    bundle = load_model(smoke_model_path("qwen2_5_vl_raw"), dtype="float32", device="cpu")
    val = easy_vqa(400, "validation", seed=0, form="mixed", crop=True)
    t0 = time.time()

    def on_step(step: int, loss: float) -> None:
        if step % 10 == 0 and step >= 40:
            bundle.model.eval()
            print(f"warm start {step:3d}  loss {loss:.3f}  {probe(bundle, val)}  ({time.time() - t0:.0f} s)", flush=True)
            bundle.model.train()

    warm_start(bundle, WarmStart(steps=args.stop, targets="gold", crop=True), on_step=on_step)
    train = easy_vqa(2000, "train", seed=0, form="mixed", crop=True)
    rng = random.Random(1)
    params = [p for p in bundle.model.parameters() if p.requires_grad]
    opt = build_optimizer(bundle.model, args.lr, 0.0, (0.9, 0.999), 1e-8)
    bundle.model.train()
    t0 = time.time()
    for step in range(1, args.sft_steps + 1):
        batch = encode_pairs(bundle, rng.sample(train, 16))
        hidden, weight = response_hidden_states(bundle, batch, grad=True)
        keep = batch.response_mask.bool()
        loss = torch.nn.functional.cross_entropy((hidden[keep] @ weight.T).float(), batch.response_ids[keep])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 20 == 0:
            print(f"supervised {step:3d}  loss {loss.item():.3f}  {probe(bundle, val)}  ({time.time() - t0:.0f} s)",
                  flush=True)


if __name__ == "__main__":
    main()
