"""Toy replication of PTD-PO's claim on smoke-scale models (a controlled experiment, not a test).

Claim (PTD-PO §2.2-2.3, Table 1): where verifiable rewards are sparse, dense guidance on the
failed rollouts from the frozen reference model given an answer-free hint beats plain GRPO.

Setup, all offline on CPU, with the tiny Qwen3-VL (harness.tiny) and text prompts:
  task      "Item <k>: which letter is the secret one?" for 32 items, each with its own secret
            letter among 16 (a..p), answer in \\boxed{} (binary exact match); the reward is
            sparse: a student at chance succeeds 1 time in 16
  hint      "the secret letter comes right after <previous letter>": it never states the answer
            (methods.ptdpo.hints.spoiler_reasons accepts every one of them) but a model that
            knows the alphabet can use it
  warm start  SFT of the tiny model (one checkpoint shared by all arms and seeds) on random
            items: with a hint, the letter after the hinted one; without a hint, a letter drawn
            at random (so the base student is at chance without hints and the hinted reference
            model, the teacher, knows the answer); its accuracies with and without hints are printed
  arms      at equal RL steps from the warm start, over several seeds:
              grpo   PTD-PO's optimiser alone (lambda_PTD = 0)
              ptdpo  the same plus lambda_PTD x top-K JSD to the hinted reference on failed
                     rollouts (tau 1.0, K 100)
Reported per arm (mean ± sample std over seeds): training reward over the last 5 steps and
greedy accuracy on the 32 items without hints (the task is defined per item, so the items are
the test set: this measures how fast each arm learns them from its own rollouts). Settings were
fixed before the run and not tuned.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/ptdpo_toy.py --out runs/ptdpo_toy [--seeds 0 1 2] [--rl-steps 30]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch

from harness.jsonl import read_jsonl
from harness.models import load_model, smoke_model_path
from harness.rewards import exact_match
from harness.rollout.hf import HFRolloutEngine
from harness.trainer import run_training, sft_step_builder
from harness.types import Sample, SamplingParams
from methods.ptdpo.context import teacher_view
from methods.ptdpo.hints import spoiler_reasons

LETTERS = "abcdefghijklmnop"


def item(k: int, secret: str | None = None, hint: bool = True) -> Sample:
    q = f"Item {k}: which letter is the secret one? Put it in \\boxed{{}}."
    h = None
    if secret is not None and hint:
        h = f"the secret letter comes right after {LETTERS[LETTERS.index(secret) - 1]}"
    return Sample(id=f"item-{k}", prompt=q, answer=secret, hint=h, meta={"question": q})


def task(seed: int = 1234, n: int = 32) -> list[Sample]:
    rng = random.Random(seed)
    return [item(k, rng.choice(LETTERS[1:])) for k in range(n)]  # 'a' has no predecessor


def warm_rows(n: int, seed: int) -> list[Sample]:
    """SFT rows on items 1000+ (never the RL items): hinted -> the right letter; no hint -> random."""
    rng = random.Random(seed)
    view = teacher_view("hint", "after")
    rows = []
    for i in range(n):
        s = item(1000 + i, rng.choice(LETTERS[1:]))
        rows.append(Sample(id=f"h{i}", prompt=view(s).prompt, response=f"\\boxed{{{s.answer}}}"))
        rows.append(Sample(id=f"n{i}", prompt=s.prompt, response=f"\\boxed{{{rng.choice(LETTERS)}}}"))
    return rows


def warm_start(out: Path, steps: int) -> Path:
    from methods.sft.config import SFTConfig
    from methods.sft.trainer import encode_sft, make_sft_loss

    cfg = SFTConfig(model=str(smoke_model_path("qwen3_vl")), data="ptdpo-toy-warm", steps=steps, batch_size=32,
                    micro_batch_size=32, max_length=16, lr=2e-3, warmup_steps=0, lr_schedule="constant",
                    dtype="float32", autocast=None, device="cpu", save_every=steps, freeze_vision=True)
    rows = warm_rows(4096, 0)
    final = run_training(cfg, out, load_data=lambda: rows, build_step=sft_step_builder(encode_sft, make_sft_loss("token-mean")),
                         samples_per_step=cfg.batch_size, desc="warm")
    assert final is not None
    return final


def accuracy(model_dir: Path, samples: list[Sample], hinted: bool) -> float:
    bundle = load_model(model_dir)
    view = teacher_view("hint", "after") if hinted else "full"
    engine = HFRolloutEngine(bundle, batch_size=32, view=view, progress=False)
    traj = engine.generate(samples, SamplingParams(n=1, temperature=0.0, max_new_tokens=8, seed=0))
    return sum(exact_match(t, s.answer) for t, s in zip(traj.texts, samples)) / len(samples)


def rl(arm: str, init: Path, items: list[Sample], seed: int, steps: int, out: Path) -> dict[str, float]:
    from methods.ptdpo.config import PROFILES, PTDPOConfig
    from methods.ptdpo.trainer import train
    from methods.registry import load_method_config

    cfg = load_method_config(PTDPOConfig, PROFILES, "smoke", overrides={
        "model": str(init), "data": "ptdpo-toy", "seed": seed, "steps": steps, "save_every": steps,
        "prompts_per_step": 8, "num_generations": 8, "micro_batch_size": 32, "rollout_batch_size": 8,
        "max_new_tokens": 6, "lr": 1e-3, "reward": "boxed-exact", "accuracy_reward": "boxed-exact",
        "kl_coef": 0.01, "lambda_ptd": 0.0 if arm == "grpo" else 0.5, "tau_ptd": 1.0, "top_k": 100})
    final = train(cfg, out, samples=items)
    assert final is not None
    recs = read_jsonl(out / "metrics.jsonl")
    return {"reward_last5": statistics.mean(r["reward_mean"] for r in recs[-5:]),
            "reward_first5": statistics.mean(r["reward_mean"] for r in recs[:5]),
            "accuracy": accuracy(final, [item(int(s.id.split("-")[1]), s.answer, hint=False) for s in items], False)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/ptdpo_toy")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rl-steps", type=int, default=30)
    p.add_argument("--warm-steps", type=int, default=300)
    args = p.parse_args()
    out = Path(args.out)
    t0 = time.time()
    items = task()
    assert all(spoiler_reasons(s.hint, s.answer, s.prompt) == [] for s in items), "a toy hint leaks the answer"
    init = warm_start(out / "warm", args.warm_steps)
    plain = [item(int(s.id.split("-")[1]), s.answer, hint=False) for s in items]
    base = {"accuracy_no_hint": accuracy(init, plain, False), "accuracy_with_hint": accuracy(init, items, True)}
    print(json.dumps({"warm_start": base}), flush=True)
    results: dict[str, list[dict[str, float]]] = {"grpo": [], "ptdpo": []}
    for seed in args.seeds:
        for arm in results:
            r = rl(arm, init, items, seed, args.rl_steps, out / f"{arm}-seed{seed}")
            results[arm].append(r)
            print(json.dumps({"arm": arm, "seed": seed, **r}), flush=True)
    summary = {arm: {k: (statistics.mean(x[k] for x in rs), statistics.stdev(x[k] for x in rs) if len(rs) > 1 else 0.0)
                     for k in rs[0]} for arm, rs in results.items()}
    print(json.dumps({"summary": summary, "warm_start": base, "minutes": round((time.time() - t0) / 60, 1)}, indent=1))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
