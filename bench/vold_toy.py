"""Toy replication of VOLD's claim on smoke-scale models (a controlled experiment, not a test).

Claim (VOLD §4, Fig. 3, Table 2): after an SFT cold start on the teacher's traces, GRPO plus
reward-masked on-policy distillation from a text-only teacher beats GRPO alone, and without the
cold start the distillation does not help.

Setup, all offline on CPU:
  task      "Compute a + b." with a, b in 0..5 (36 facts), answer in \\boxed{} (binary exact match)
  teacher   the tiny Qwen3 (harness.models.smoke_model_path("qwen3")), first SFT-trained on
            reference solutions until it solves the task (its accuracy is printed)
  student   the tiny Qwen2.5-VL (same tokenizer), vision tower frozen
  stage 0   the teacher writes one trace per training prompt (methods.vold.traces)
  stage 1   a short SFT of the student on those traces (one checkpoint shared by all seeds)
  stage 2   arms at equal RL steps, each over several seeds:
              grpo_sft    GRPO from the SFT checkpoint (VOLD with beta = 0; the Fig. 3 baseline)
              vold        SFT + GRPO + beta x masked k2 distillation (Eq. 6, beta 0.1)
              vold_nosft  GRPO + distillation from the base student (no cold start)
              grpo_base   GRPO from the base student (Table 2 "RL only")
Reported per arm (mean ± sample std over seeds): the training reward over the last 5 steps,
greedy accuracy on held-out text prompts, on the same prompts with an image of the expression
attached (the toy "visual" set: image + question, as the VLM sees benchmark items), and on the
Geo3K smoke fixture rows (evals geometry3k_val, source "smoke"; a tiny model is not expected to
solve these, reported for completeness). Settings were fixed before the run and not tuned.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/vold_toy.py --out runs/vold_toy [--seeds 0 1 2] [--rl-steps 30]

With --sft-steps 30 (the first design) the student samples almost no correct answer, every arm
stays at ~0 reward and the comparison says nothing; 120 (default) is the first non-degenerate setting.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from evals.validation import benchmark_validator
from harness.data.prompts import format_prompt
from harness.jsonl import read_jsonl
from harness.models import load_model, smoke_model_path
from harness.rewards import exact_match
from harness.rollout.hf import HFRolloutEngine
from harness.types import Sample, SamplingParams


def facts(seed: int, n: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(rng.randint(0, 5), rng.randint(0, 5)) for _ in range(n)]


def question(a: int, b: int) -> str:
    return f"Compute {a} + {b}."


def write_sets(root: Path) -> dict[str, Path]:
    """Teacher SFT rows (MoT schema, reference solutions), RL prompts (orz schema) and held-out rows."""
    root.mkdir(parents=True, exist_ok=True)
    train, held = facts(0, 256), facts(1, 48)
    sft = root / "teacher_sft" / "train.jsonl"
    sft.parent.mkdir(exist_ok=True)
    with sft.open("w") as f:
        for a, b in train:
            prompt = format_prompt(question(a, b), "step_by_step")
            f.write(json.dumps({"messages": [{"role": "user", "content": prompt},
                                             {"role": "assistant", "content": f"{a} + {b} = {a + b}. \\boxed{{{a + b}}}"}]}) + "\n")
    rl = root / "rl_prompts" / "train.jsonl"
    rl.parent.mkdir(exist_ok=True)
    with rl.open("w") as f:
        for a, b in train:
            f.write(json.dumps([{"from": "human", "value": question(a, b)},
                                {"from": "assistant", "ground_truth": {"value": str(a + b)}}]) + "\n")
    return {"teacher_sft": sft.parent, "rl": rl.parent, "held": held}


def held_samples(held: list[tuple[int, int]], visual: bool) -> list[Sample]:
    out = []
    font = ImageFont.load_default_imagefont()
    for i, (a, b) in enumerate(held):
        images = []
        if visual:
            img = Image.new("RGB", (84, 56), "white")
            ImageDraw.Draw(img).text((10, 20), f"{a} + {b}", font=font, fill="black")
            images = [img]
        out.append(Sample(id=f"held-{i}", prompt=format_prompt(question(a, b), "step_by_step"), answer=str(a + b),
                          images=images))
    return out


def accuracy(model_dir: Path | str, samples: list[Sample], max_new_tokens: int = 16) -> float:
    bundle = load_model(model_dir)
    traj = HFRolloutEngine(bundle, batch_size=16, progress=False).generate(
        samples, SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens))
    return 100.0 * sum(exact_match(t, s.answer) for t, s in zip(traj.texts, samples)) / len(samples)


def geo3k_smoke_accuracy(model_dir: Path | str) -> float:
    from evals.benchmarks import get_benchmark

    bench = get_benchmark("geometry3k_val")
    samples = bench.load("smoke", None, smoke_n=4)
    bundle = load_model(model_dir)
    traj = HFRolloutEngine(bundle, batch_size=4, progress=False).generate(
        samples, SamplingParams(n=1, temperature=0.0, max_new_tokens=16))
    return 100.0 * sum(bench.score(s, t)["score"] for s, t in zip(samples, traj.texts)) / len(samples)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/vold_toy")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rl-steps", type=int, default=30)
    p.add_argument("--teacher-steps", type=int, default=300)
    p.add_argument("--sft-steps", type=int, default=120)
    args = p.parse_args()
    out = Path(args.out)
    t0 = time.perf_counter()
    sets = write_sets(out / "data")
    held_text, held_vis = held_samples(sets["held"], False), held_samples(sets["held"], True)

    # --- the teacher: tiny Qwen3 SFT-trained on reference solutions
    from methods.registry import load_method_config
    from methods.sft.config import PROFILES as SFT_PROFILES, SFTConfig
    from methods.sft.trainer import train as sft_train

    tcfg = load_method_config(SFTConfig, SFT_PROFILES, "smoke", None, {
        "model": str(smoke_model_path("qwen3")), "data": str(sets["teacher_sft"]), "data_limit": None,
        "steps": args.teacher_steps, "batch_size": 16, "micro_batch_size": 16, "lr": 2e-3, "save_every": 100})
    teacher = sft_train(tcfg, out / "teacher")
    teacher_acc = accuracy(teacher, held_text)
    print(f"teacher (tiny Qwen3 after {args.teacher_steps} SFT steps): held-out accuracy {teacher_acc:.1f}%")

    # --- stages 0 and 1: teacher traces on the training prompts, short student SFT on them
    from methods.vold import train_rl, train_sft, train_traces

    traces = train_traces({"model": str(teacher), "data": str(sets["teacher_sft"]), "data_limit": None,
                           "max_new_tokens": 24, "drop_truncated": True, "temperature": 1.0, "top_p": 1.0,
                           "chunk_prompts": 64, "batch_size": 32}, out / "traces", "smoke")
    manifest = (traces / "traces.yaml").read_text()
    sft = train_sft({"teacher": str(traces), "data": str(sets["teacher_sft"]), "data_limit": None,
                     "steps": args.sft_steps, "batch_size": 16, "micro_batch_size": 16, "max_length": 24,
                     "save_every": args.sft_steps}, out / "sft", "smoke")
    base = str(smoke_model_path("qwen2_5_vl"))
    print(f"traces: {' '.join(l for l in manifest.splitlines() if l.split(':')[0] in ('prompts', 'kept', 'truncated'))}")
    print(f"student after SFT: text {accuracy(sft, held_text):.1f}%  visual {accuracy(sft, held_vis):.1f}%; "
          f"base: text {accuracy(base, held_text):.1f}%")

    # --- stage 2 arms
    arms = {"grpo_sft": (str(sft), 0.0), "vold": (str(sft), 0.1), "vold_nosft": (base, 0.1), "grpo_base": (base, 0.0)}
    results: dict[str, list[dict]] = {a: [] for a in arms}
    for seed in args.seeds:
        for arm, (init, beta) in arms.items():
            run = out / "rl" / f"{arm}-s{seed}"
            final = train_rl({"model": init, "teacher": str(teacher), "beta": beta, "kl_mask": True, "seed": seed,
                              "data": str(sets["rl"]), "reward": "boxed-exact", "steps": args.rl_steps,
                              "prompts_per_step": 8, "num_generations": 4, "mini_batches_per_step": 1,
                              "micro_batch_size": 16, "max_new_tokens": 16, "rollout_batch_size": 8, "lr": 1e-3,
                              "val_every": 10, "val_max_new_tokens": 16, "save_every": args.rl_steps}, run, "smoke",
                             validator=benchmark_validator)
            recs = read_jsonl(run / "metrics.jsonl", torn_tail=True)
            results[arm].append({
                "reward_last5": statistics.mean(r["reward_mean"] for r in recs[-5:]),
                "text_acc": accuracy(final, held_text), "visual_acc": accuracy(final, held_vis),
                "geo3k_smoke_acc": geo3k_smoke_accuracy(final)})
            print(f"  seed {seed} {arm:11s} {results[arm][-1]}", flush=True)

    def ms(xs: list[float]) -> str:
        return f"{statistics.mean(xs):6.1f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:4.1f}"

    print(f"\nVOLD toy replication: {len(args.seeds)} seeds, {args.rl_steps} RL steps, teacher accuracy "
          f"{teacher_acc:.1f}% (mean ± sample std over seeds)")
    print(f"{'arm':12s} {'reward(last5)':>16s} {'text acc %':>14s} {'visual acc %':>14s} {'geo3k smoke %':>14s}")
    for arm, rs in results.items():
        print(f"{arm:12s} {ms([100 * r['reward_last5'] for r in rs]):>16s} {ms([r['text_acc'] for r in rs]):>14s} "
              f"{ms([r['visual_acc'] for r in rs]):>14s} {ms([r['geo3k_smoke_acc'] for r in rs]):>14s}")
    from methods.vold.curves import plot_learning_curves

    fig = plot_learning_curves({arm: out / "rl" / f"{arm}-s{args.seeds[0]}" for arm in arms}, out / "fig3_toy.png",
                               title=f"VOLD toy, seed {args.seeds[0]} (Geo3K panel: smoke fixture rows)")
    (out / "results.json").write_text(json.dumps({"teacher_acc": teacher_acc, "results": results}, indent=1))
    print(f"figure: {fig}; results: {out / 'results.json'}; {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
