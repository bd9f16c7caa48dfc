"""Toy replication of VGS's claim on smoke-scale models (a controlled experiment, not a test).

Claim (VGS §3.2, §6, Table 1): standard on-policy distillation under-uses the image; adding the
visual term (Visual Gradient Steering) moves the student toward the teacher's visual information
gain and improves visually grounded accuracy.

Setup, all offline on CPU:
  task      "The image is filled with one colour. Answer with its number: 1 red, 2 green, 3 blue,
            4 yellow." over 64x64 images of one jittered colour: the text alone never determines
            the answer (chance 25%)
  teacher   the tiny Qwen3-VL (harness.models.smoke_model_path("qwen3_vl")), first SFT-trained on
            (image, question) -> digit until it reads the colour (its accuracy with and without the
            image is printed)
  student   the same tiny Qwen3-VL at its initial weights
  arms      at equal steps, over several seeds (rollout sampling and data order):
              opd   standard on-policy distillation (gamma = lambda = 0, eta = 1; full-vocabulary reverse KL)
              vgs   VGS-LP (gamma 2, lambda 0.01) with the exact eta of Eq. 15 (the paper's 0.41 / 0.36
                    are measured for the 2B / 4B students, not for this model)
Reported per arm (mean ± sample std over seeds): greedy accuracy on held-out images, the same
prompts without the image (text-only: should stay near chance if the answer needs the image),
and the cosine between the standard and visual gradients (Fig. 3) averaged over the
diagnostics steps. Settings were fixed before the run and not tuned.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/vgs_toy.py --out runs/vgs_toy [--seeds 0 1 2] [--steps 20]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

from harness.models import load_model, smoke_model_path
from harness.rollout.hf import HFRolloutEngine
from harness.trainer import online_step_builder, run_training, sft_step_builder
from harness.types import Sample, SamplingParams

COLOURS = {"1": (220, 40, 40), "2": (40, 190, 60), "3": (40, 70, 220), "4": (230, 210, 40)}
QUESTION = "The image is filled with one colour. Answer with its number: 1 red, 2 green, 3 blue, 4 yellow."


def make_samples(seed: int, n: int) -> list[Sample]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ans = rng.choice(sorted(COLOURS))
        rgb = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in COLOURS[ans])
        out.append(Sample(id=f"colour-{seed}-{i}", prompt=QUESTION, answer=ans, response=ans,
                          images=[Image.new("RGB", (64, 64), rgb)]))
    return out


def accuracy(model_dir, samples: list[Sample], image: bool) -> float:
    bundle = load_model(model_dir)
    rows = samples if image else [replace(s, images=[]) for s in samples]
    traj = HFRolloutEngine(bundle, batch_size=16, progress=False).generate(
        rows, SamplingParams(n=1, temperature=0.0, max_new_tokens=3))
    return 100.0 * sum(t.strip().startswith(s.answer) for t, s in zip(traj.texts, samples)) / len(samples)


def train_teacher(out: Path, train: list[Sample], steps: int) -> Path:
    from methods.sft.config import SFTConfig
    from methods.sft.trainer import encode_sft, make_sft_loss

    cfg = SFTConfig(model=str(smoke_model_path("qwen3_vl")), data="toy-colours", steps=steps, batch_size=16,
                    micro_batch_size=16, max_length=4, lr=2e-3, warmup_steps=0, lr_schedule="constant",
                    dtype="float32", autocast=None, freeze_vision=False, save_every=steps, device="cpu")
    return run_training(cfg, out, load_data=lambda: train, build_step=sft_step_builder(encode_sft, make_sft_loss("token-mean")),
                        samples_per_step=cfg.batch_size, desc="teacher-sft")


def distill(out: Path, teacher: Path, train: list[Sample], arm: str, seed: int, steps: int) -> Path:
    from methods.vgs.config import VGSConfig
    from methods.vgs.trainer import VGS

    vgs = dict(gamma=2.0, lambda_lp=0.01, eta_mode="exact") if arm == "vgs" else \
        dict(gamma=0.0, lambda_lp=0.0, eta_mode="fixed", eta=1.0)
    cfg = VGSConfig(model=str(smoke_model_path("qwen3_vl")), teacher=str(teacher), teacher_dtype="float32",
                    data="toy-colours", system_prompt=None, steps=steps, prompts_per_step=8, num_generations=2,
                    micro_batch_size=16, max_new_tokens=3, lr=1e-3, warmup_steps=0, lr_schedule="constant",
                    dtype="float32", autocast=None, device="cpu", save_every=steps, rollout_batch_size=8,
                    seed=seed, diag_every=2, **vgs)
    return run_training(cfg, out, load_data=lambda: train, build_step=online_step_builder(VGS(cfg), None),
                        samples_per_step=cfg.prompts_per_step, desc=arm)


def mean_std(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.1f} ± {statistics.stdev(xs):.1f}" if len(xs) > 1 else f"{xs[0]:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/vgs_toy")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--teacher-steps", type=int, default=60)
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    t0 = time.time()
    train, held = make_samples(0, 128), make_samples(1, 48)
    teacher = train_teacher(out / "teacher", train, args.teacher_steps)
    t_img, t_txt = accuracy(teacher, held, True), accuracy(teacher, held, False)
    s_img, s_txt = accuracy(smoke_model_path("qwen3_vl"), held, True), accuracy(smoke_model_path("qwen3_vl"), held, False)
    print(f"teacher: {t_img:.1f}% with the image, {t_txt:.1f}% without; initial student {s_img:.1f}% / {s_txt:.1f}%")
    results: dict[str, dict[str, list[float]]] = {}
    for arm in ("opd", "vgs"):
        r = results.setdefault(arm, {"image": [], "text": [], "cos_std_vis": [], "kl_std_last": []})
        for seed in args.seeds:
            run = out / f"{arm}-seed{seed}"
            final = distill(run, teacher, train, arm, seed, args.steps)
            recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            r["image"].append(accuracy(final, held, True))
            r["text"].append(accuracy(final, held, False))
            r["cos_std_vis"].append(statistics.mean(x["cos_std_vis"] for x in recs if "cos_std_vis" in x))
            r["kl_std_last"].append(statistics.mean(x["kl_std"] for x in recs[-3:]))
            print(arm, seed, {k: round(v[-1], 3) for k, v in r.items()}, flush=True)
    summary = {"teacher": {"image": t_img, "text": t_txt}, "initial_student": {"image": s_img, "text": s_txt},
               "arms": results, "seeds": args.seeds, "steps": args.steps, "minutes": round((time.time() - t0) / 60, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print("| arm | accuracy with image % | accuracy without image % | cos(g_std, g_vis) | KL_std last 3 steps |")
    print("|---|---|---|---|---|")
    for arm, r in results.items():
        print(f"| {arm} | {mean_std(r['image'])} | {mean_std(r['text'])} | "
              f"{statistics.mean(r['cos_std_vis']):.3f} ± {statistics.stdev(r['cos_std_vis']) if len(r['cos_std_vis']) > 1 else 0:.3f} | "
              f"{statistics.mean(r['kl_std_last']):.3f} |")
    print(f"({summary['minutes']} min)")


if __name__ == "__main__":
    main()
