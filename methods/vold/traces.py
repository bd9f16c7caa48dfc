"""VOLD stage 0: the text-only teacher writes a reasoning trace for every SFT prompt (§3.2, §4.1).

The prompts (Mixture-of-Thoughts in the paper: only its prompts, not its R1 traces) are rendered
text-only with the teacher's chat template and sampled through a rollout engine. Traces that
reach the length limit without ending (8192 tokens in the paper) are dropped; answers are not
verified (the SFT stage is for distributional alignment only, §4.1).

Output (``<out>/final``), loadable by ``harness.data.load_training_set(<out>/final)`` and hence by
methods.sft: ``train.jsonl`` in the Mixture-of-Thoughts schema (``messages`` = system?, user,
assistant; ``source``, ``num_tokens``, ``prompt_id``) and ``traces.yaml`` (counts, settings).
Resumable: prompts are processed in chunks of ``chunk_prompts``, each written atomically to
``<out>/parts/``; a rerun skips finished chunks, and every chunk's sampling seed depends only on
the run seed and the chunk index, so a resumed run writes the same traces as an uninterrupted one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from tqdm.auto import tqdm

from harness.jsonl import read_jsonl
from harness.models import resolve_model_name
from harness.durable import fsync_dir, fsync_tree
from harness.run_dir import RunDir, atomic_write_text
from harness.types import Sample, SamplingParams, Trajectories
from methods.vold.config import TracesConfig

MANIFEST = "traces.yaml"
DATA_FILE = "train.jsonl"

__all__ = ["MANIFEST", "DATA_FILE", "generate_traces", "trace_rows", "is_traces_dir", "read_manifest"]


def is_traces_dir(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file() and (Path(path) / DATA_FILE).is_file()


def read_manifest(path: str | Path) -> dict[str, Any]:
    return yaml.safe_load((Path(path) / MANIFEST).read_text()) or {}


def trace_rows(samples: list[Sample], traj: Trajectories, eos_ids: list[int], *, drop_truncated: bool,
               source: str) -> tuple[list[dict], dict[str, int]]:
    """One Mixture-of-Thoughts row per kept trace, and the counts ``kept`` / ``truncated`` (reached
    the length cap without an end-of-turn token) / ``dropped_truncated`` / ``dropped_empty``."""
    rows: list[dict] = []
    counts = {"kept": 0, "truncated": 0, "dropped_truncated": 0, "dropped_empty": 0}
    eos = torch.tensor(eos_ids)
    for i in range(len(traj)):
        sample = traj.sample_of(i)
        n = int(traj.response_mask[i].sum())
        finished = n > 0 and bool(torch.isin(traj.response_ids[i, n - 1].cpu(), eos))
        if not finished:
            counts["truncated"] += 1
            if drop_truncated:
                counts["dropped_truncated"] += 1
                continue
        text = traj.texts[i].strip()
        if not text:
            counts["dropped_empty"] += 1
            continue
        messages = ([{"role": "system", "content": sample.system}] if sample.system else []) + [
            {"role": "user", "content": sample.prompt}, {"role": "assistant", "content": text}]
        rows.append({"messages": messages, "source": source, "num_tokens": n, "finished": finished,
                     "prompt_id": sample.id})
        counts["kept"] += 1
    return rows, counts


def _device(device: str) -> str:
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _load_prompts(cfg: TracesConfig) -> list[Sample]:
    from methods.grpo.data import load_rows, require

    return require(load_rows(cfg), "prompt", cfg.data, "a trace needs a prompt")


def _default_engine(cfg: TracesConfig) -> Any:
    if cfg.engine == "vllm":
        from harness.rollout.vllm import VLLMRolloutEngine

        return VLLMRolloutEngine(resolve_model_name(cfg.model), dtype=cfg.dtype, view=cfg.view, seed=cfg.seed,
                                 **cfg.vllm.engine_kwargs())
    from harness.models import load_model
    from harness.rollout.hf import HFRolloutEngine

    bundle = load_model(resolve_model_name(cfg.model), dtype=cfg.dtype, device=_device(cfg.device), trainable=False)
    return HFRolloutEngine(bundle, batch_size=cfg.batch_size, view=cfg.view)


def generate_traces(cfg: TracesConfig, out_dir: str | Path, *,
                    make_engine: Callable[[TracesConfig], Any] = _default_engine) -> Path:
    """Run (or resume) stage 0 into ``out_dir``; returns the traces dataset directory ``<out>/final``."""
    run = RunDir(out_dir)
    final = run.final
    if run.is_complete():
        run.check_config(cfg)
        return final
    prompts = _load_prompts(cfg)  # validated before anything is written
    run.start(cfg)
    parts = run.path / "parts"
    parts.mkdir(exist_ok=True)
    chunks = [prompts[k:k + cfg.chunk_prompts] for k in range(0, len(prompts), cfg.chunk_prompts)]
    todo = [k for k in range(len(chunks)) if not (parts / f"chunk_{k:06d}.jsonl").is_file()]
    engine = make_engine(cfg) if todo else None
    eos_ids = engine.bundle.eos_token_ids if engine is not None else []
    source = f"teacher:{cfg.model}"
    for k in tqdm(todo, desc="teacher traces", unit="chunk", disable=len(todo) <= 1):
        sampling = SamplingParams(n=1, temperature=cfg.temperature, top_p=cfg.top_p,
                                  max_new_tokens=cfg.max_new_tokens, seed=cfg.seed * 1_000_003 + k)
        traj = engine.generate(chunks[k], sampling)
        rows, counts = trace_rows(chunks[k], traj, eos_ids, drop_truncated=cfg.drop_truncated, source=source)
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        body += json.dumps({"_counts": counts, "prompts": len(chunks[k])}) + "\n"
        atomic_write_text(parts / f"chunk_{k:06d}.jsonl", body)
    totals = {"prompts": 0, "kept": 0, "truncated": 0, "dropped_truncated": 0, "dropped_empty": 0}
    lines: list[str] = []
    for k in range(len(chunks)):
        # parts are written whole (atomic_write_text), so they are read strictly
        for rec in read_jsonl(parts / f"chunk_{k:06d}.jsonl"):
            if "_counts" in rec:
                totals["prompts"] += rec["prompts"]
                for key, v in rec["_counts"].items():
                    totals[key] += v
            else:
                lines.append(json.dumps(rec, ensure_ascii=False))
    if not lines:
        raise RuntimeError(f"stage 0 kept no trace of {totals['prompts']} prompts ({totals}); "
                           f"raise max_new_tokens or set drop_truncated=false")
    tmp = final.with_name(f".{final.name}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / DATA_FILE).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    manifest = {"teacher": cfg.model, "prompts_from": cfg.data, "split": cfg.data_split,
                "data_limit": cfg.data_limit, "view": cfg.view, "max_new_tokens": cfg.max_new_tokens,
                "drop_truncated": cfg.drop_truncated, "temperature": cfg.temperature, "top_p": cfg.top_p,
                "seed": cfg.seed, **totals}
    (tmp / MANIFEST).write_text(yaml.safe_dump(manifest, sort_keys=False))
    fsync_tree(tmp)
    if final.exists():
        import shutil

        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    run.mark_complete(manifest)
    return final
