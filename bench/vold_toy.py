"""Toy replication of VOLD's claim on smoke-scale models (a controlled experiment, not a test).

Claim (VOLD §4, Fig. 3, Table 2): after an SFT cold start on the teacher's traces, GRPO plus
reward-masked on-policy distillation from a text-only teacher beats GRPO alone, and without the
cold start the distillation does not help.

Setup, all offline on CPU:
  task      "Compute a + b." with a, b in 0..9 (100 facts), answer in \\boxed{} (binary exact match);
            a fixed fifth of the facts (``is_held_out``, by hash) is held out: training prompts are
            drawn from the other 80 only (disjoint by construction, tests/test_toy_replication.py)
  models    a tiny Qwen3 teacher and a tiny Qwen2.5-VL student on the small offline BPE
            (``toy_models``; the smoke profile's real-vocabulary models would make 3 seeds x 4
            arms take hours on a CPU), the teacher first SFT-trained on reference solutions (its
            held-out accuracy is printed), the student's vision tower frozen
  stage 0   the teacher writes one trace per training prompt (methods.vold.traces)
  stage 1   a short SFT of the student on those traces (one checkpoint shared by all seeds)
  stage 2   arms at equal RL steps, each over several seeds:
              grpo_sft    GRPO from the SFT checkpoint (VOLD with beta = 0; the Fig. 3 baseline)
              vold        SFT + GRPO + beta x masked k2 distillation (Eq. 6, beta 0.1)
              vold_nosft  GRPO + distillation from the base student (no cold start)
              grpo_base   GRPO from the base student (Table 2 "RL only")
Reported per arm (mean ± sample std over seeds): the training reward over the last 5 steps and
greedy accuracy on the 20 held-out facts asked three ways: ``text`` (the question), ``text+image``
(the question with an image of the expression attached: robustness to an image; the text still
determines the answer) and ``visual`` (one fixed question, "Compute the sum shown in the image.",
the operands only in the image: the answer needs the image; the test checks that the text alone
cannot determine it). Settings were fixed before the run and not tuned.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/vold_toy.py --out runs/vold_toy [--seeds 0 1 2] [--rl-steps 30]

With --sft-steps 30 (the first design) the student samples almost no correct answer, every arm
stays at ~0 reward and the comparison says nothing; 120 (default) is the first non-degenerate setting.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from harness.data.prompts import format_prompt
from harness.jsonl import read_jsonl
from harness.models import build_tiny_model, load_model
from harness.rewards import exact_match
from harness.rollout.hf import HFRolloutEngine
from harness.types import Sample, SamplingParams


FACTS = [(a, b) for a in range(10) for b in range(10)]
"""Every fact of the toy task: "Compute a + b." with a, b in 0..9 (100 facts)."""


def is_held_out(fact: tuple[int, int]) -> bool:
    """The fixed held-out fifth of the facts (by a hash of the pair): never trained on."""
    return hashlib.sha256(f"{fact[0]}+{fact[1]}".encode()).digest()[0] % 5 == 0


def split_facts() -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(training facts, held-out facts): disjoint by construction."""
    return [f for f in FACTS if not is_held_out(f)], [f for f in FACTS if is_held_out(f)]


def question(a: int, b: int) -> str:
    return f"Compute {a} + {b}."


MODES = ("text", "text+image", "visual")
VISUAL_QUESTION = "Compute the sum shown in the image."
"""The visual set's only question text: the operands are in the image alone."""


def write_sets(root: Path, n_train: int = 256) -> dict:
    """Teacher SFT rows (MoT schema, reference solutions) and RL prompts (orz schema), ``n_train``
    draws from the training facts only, and the held-out facts."""
    root.mkdir(parents=True, exist_ok=True)
    train_facts, held = split_facts()
    rng = random.Random(0)
    train = [rng.choice(train_facts) for _ in range(n_train)]
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
    return {"teacher_sft": sft.parent, "rl": rl.parent, "train": train, "held": held}


def expression_image(a: int, b: int) -> Image.Image:
    img = Image.new("RGB", (84, 56), "white")
    ImageDraw.Draw(img).text((10, 20), f"{a} + {b}", font=ImageFont.load_default_imagefont(), fill="black")
    return img


def held_samples(held: list[tuple[int, int]], mode: str) -> list[Sample]:
    """Held-out items as ``text`` (the question), ``text+image`` (the question with the expression's
    image attached: robustness to an image, the text still determines the answer) or ``visual``
    (one fixed question text, the operands only in the image: the answer needs the image)."""
    out = []
    for i, (a, b) in enumerate(held):
        text = VISUAL_QUESTION if mode == "visual" else question(a, b)
        images = [] if mode == "text" else [expression_image(a, b)]
        out.append(Sample(id=f"held-{mode}-{i}", prompt=format_prompt(text, "step_by_step"), answer=str(a + b),
                          images=images))
    return out


def toy_models(root: Path) -> tuple[Path, Path]:
    """(teacher, student) initial models: a tiny Qwen3 and a tiny Qwen2.5-VL on the small offline
    BPE (the toy is a controlled experiment on the loss, run at a vocabulary that makes three seeds
    of four arms take minutes; the smoke profile's models are on the real vocabulary)."""
    teacher, student = root / "init_qwen3", root / "init_qwen2_5_vl"
    if not (teacher / "model.safetensors").exists():
        build_tiny_model("qwen3", teacher, seed=1, vocab="smoke")
    if not (student / "model.safetensors").exists():
        build_tiny_model("qwen2_5_vl", student, seed=0, vocab="smoke")
    return teacher, student


def accuracy(model_dir: Path | str, samples: list[Sample], max_new_tokens: int = 16) -> float:
    bundle = load_model(model_dir)
    traj = HFRolloutEngine(bundle, batch_size=16, progress=False).generate(
        samples, SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens))
    return 100.0 * sum(exact_match(t, s.answer) for t, s in zip(traj.texts, samples)) / len(samples)


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
    held = {mode: held_samples(sets["held"], mode) for mode in MODES}
    teacher_init, student_init = toy_models(out / "models")

    # --- the teacher: tiny Qwen3 SFT-trained on reference solutions
    from methods.registry import load_method_config
    from methods.sft.config import PROFILES as SFT_PROFILES, SFTConfig
    from methods.sft.trainer import train as sft_train

    tcfg = load_method_config(SFTConfig, SFT_PROFILES, "smoke", None, {
        "model": str(teacher_init), "data": str(sets["teacher_sft"]), "data_limit": None,
        "steps": args.teacher_steps, "batch_size": 16, "micro_batch_size": 16, "lr": 2e-3, "save_every": 100})
    teacher = sft_train(tcfg, out / "teacher")
    teacher_acc = accuracy(teacher, held["text"])
    print(f"teacher (tiny Qwen3 after {args.teacher_steps} SFT steps): held-out accuracy {teacher_acc:.1f}%")

    # --- stages 0 and 1: teacher traces on the training prompts, short student SFT on them
    from methods.vold import train_rl, train_sft, train_traces

    traces = train_traces({"model": str(teacher), "data": str(sets["teacher_sft"]), "data_limit": None,
                           "max_new_tokens": 24, "drop_truncated": True, "temperature": 1.0, "top_p": 1.0,
                           "chunk_prompts": 64, "batch_size": 32}, out / "traces", "smoke")
    manifest = (traces / "traces.yaml").read_text()
    sft = train_sft({"model": str(student_init), "teacher": str(traces), "data": str(sets["teacher_sft"]), "data_limit": None,
                     "steps": args.sft_steps, "batch_size": 16, "micro_batch_size": 16, "max_length": 24,
                     "save_every": args.sft_steps}, out / "sft", "smoke")
    base = str(student_init)
    print(f"traces: {' '.join(l for l in manifest.splitlines() if l.split(':')[0] in ('prompts', 'kept', 'truncated'))}")
    print("student after SFT: " + "  ".join(f"{m} {accuracy(sft, held[m]):.1f}%" for m in MODES)
          + f"; base: text {accuracy(base, held['text']):.1f}%")

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
                              "val_every": 0, "save_every": args.rl_steps}, run, "smoke")
            recs = read_jsonl(run / "metrics.jsonl", torn_tail=True)
            results[arm].append({"reward_last5": statistics.mean(r["reward_mean"] for r in recs[-5:]),
                                 **{f"{m}_acc": accuracy(final, held[m]) for m in MODES}})
            print(f"  seed {seed} {arm:11s} {results[arm][-1]}", flush=True)

    def ms(xs: list[float]) -> str:
        return f"{statistics.mean(xs):6.1f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:4.1f}"

    print(f"\nVOLD toy replication: {len(args.seeds)} seeds, {args.rl_steps} RL steps, teacher accuracy "
          f"{teacher_acc:.1f}% (mean ± sample std over seeds)")
    print(f"{'arm':12s} {'reward(last5)':>16s}" + "".join(f" {m + ' acc %':>16s}" for m in MODES))
    for arm, rs in results.items():
        print(f"{arm:12s} {ms([100 * r['reward_last5'] for r in rs]):>16s}"
              + "".join(f" {ms([r[m + '_acc'] for r in rs]):>16s}" for m in MODES))
    from methods.vold.curves import plot_learning_curves

    fig = plot_learning_curves({arm: out / "rl" / f"{arm}-s{args.seeds[0]}" for arm in arms}, out / "fig3_toy.png",
                               title=f"VOLD toy, seed {args.seeds[0]}")
    (out / "results.json").write_text(json.dumps({"teacher_acc": teacher_acc, "results": results}, indent=1))
    print(f"figure: {fig}; results: {out / 'results.json'}; {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
