"""``evals`` command line: ``evals run ...`` and ``evals list``."""
from __future__ import annotations

import argparse
import json
import sys

from tabulate import tabulate

from harness.cli_errors import EXIT_USER_ERROR, run_reporting_errors
from harness.train_config import VLLMSettings

SMOKE_MAX_NEW_TOKENS = 16     # as reproduce's smoke profile: a tiny model rarely stops by itself
FULL_MAX_NEW_TOKENS = 1024


def default_max_new_tokens(profile: str, model: str, source: str) -> int:
    if profile == "auto":
        profile = "smoke" if model.startswith("smoke:") or source == "smoke" else "full"
    return SMOKE_MAX_NEW_TOKENS if profile == "smoke" else FULL_MAX_NEW_TOKENS


def default_out(model: str) -> str:
    import re

    safe = re.sub(r"[^\w.-]+", "_", model).strip("_") or "model"
    return f"runs/evals/{safe}"


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evals", description="Evaluate a model on the papers' benchmarks.")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="evaluate a model")
    r.add_argument("--model", required=True, help="local path, hub id, or smoke:<kind> (tiny smoke model)")
    r.add_argument("--benchmarks", required=True, help="comma-separated names, a group name, or 'all'")
    r.add_argument("--limit", type=int, default=None, help="first N samples (problem groups) per benchmark")
    r.add_argument("--engine", default="hf", choices=["hf", "vllm"])
    r.add_argument("--source", default="hub", help="hub | smoke | a local file or directory")
    r.add_argument("--smoke-n", type=int, default=2,
                   help="rows per benchmark with --source smoke (real held-out items; see evals/smoke.py)")
    r.add_argument("--mode", default="greedy", choices=["greedy", "sample"])
    r.add_argument("--k", type=int, default=1, help="samples per question (mode sample)")
    r.add_argument("--temperature", type=float, default=None, help="default 0 (greedy) / 1.0 (sample)")
    r.add_argument("--top-p", type=float, default=1.0)
    r.add_argument("--profile", default="auto", choices=["auto", "smoke", "full"],
                   help="sets the default --max-new-tokens (smoke: %d, full: %d); auto: smoke for a smoke: "
                        "model or --source smoke" % (SMOKE_MAX_NEW_TOKENS, FULL_MAX_NEW_TOKENS))
    r.add_argument("--max-new-tokens", type=int, default=None, help="default: from --profile")
    r.add_argument("--batch-size", type=int, default=8)
    r.add_argument("--system", default=None, help="system prompt: vgs | ptdpo | think | literal text")
    r.add_argument("--tool-rounds", type=int, default=0,
                   help="multi-turn tool use: at most N crop_image calls per response, each observation shown "
                        "to the model (Pixel-Reasoner's protocol: 5); default 0, single-turn")
    r.add_argument("--judge", default=None, metavar="URL", help="OpenAI-compatible endpoint for LLM extraction")
    r.add_argument("--judge-model", default="gpt-4o-mini")
    r.add_argument("--judge-api-key-env", default="OPENAI_API_KEY",
                   help="environment variable holding the judge's API key (if it needs one)")
    r.add_argument("--out", default=None,
                   help="output directory (records, summaries); default runs/evals/<model> (git-ignored)")
    r.add_argument("--device", default="auto", help="auto (cuda when available, else cpu) | cpu | cuda | cuda:N")
    r.add_argument("--dtype", default=None, help="default float32 (engine hf) / bfloat16 (engine vllm)")
    v = r.add_argument_group("engine vllm")
    v.add_argument("--gpu-memory-utilization", type=float, default=None, help="share of GPU memory (default 0.5)")
    v.add_argument("--tensor-parallel-size", type=int, default=None, help="GPUs per engine (default 1)")
    v.add_argument("--max-model-len", type=int, default=None, help="prompt + response tokens (default: the model's)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--no-progress", action="store_true")
    f = sub.add_parser("score-file", help="score a prediction file in VLMEvalKit's layout ({model}_{dataset}.tsv)")
    f.add_argument("--benchmark", required=True)
    f.add_argument("--predictions", required=True, help=".tsv / .csv / .json / .jsonl / .xlsx with a prediction column")
    f.add_argument("--source", default="hub", help="where the benchmark's rows come from (as for run)")
    f.add_argument("--smoke-n", type=int, default=2)
    f.add_argument("--limit", type=int, default=None)
    f.add_argument("--judge", default=None, metavar="URL")
    f.add_argument("--judge-model", default="gpt-4o-mini")
    f.add_argument("--judge-api-key-env", default="OPENAI_API_KEY")
    f.add_argument("--out", required=True, help="output directory (records, summaries)")
    sub.add_parser("list", help="list the benchmarks")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_reporting_errors("evals", lambda: _main(args))


def _side(summary: dict, kind: str) -> str:
    """The headline value by ``kind`` ("rule" / "judge") scores, for the side-by-side columns."""
    m = summary.get(f"{kind}_metrics") or {}
    v = m.get(summary["headline"], m.get("accuracy"))
    return "-" if v is None else f"{v:.2f}"


def _main(args: argparse.Namespace) -> int:
    if args.cmd == "list":
        from evals.benchmarks import REGISTRY
        rows = [(b.name, b.hf_id or "-", b.config or "", ",".join(b.splits) if len(b.splits) < 3
                 else f"{b.splits[0]}..({len(b.splits)})", b.size or "?", b.headline) for b in REGISTRY.values()]
        print(tabulate(rows, headers=["name", "hf_id", "config", "split", "size", "headline"]))
        return 0
    if args.cmd == "score-file":
        from evals.runner import score_file
        try:
            s = score_file(args.benchmark, args.predictions, out_dir=args.out, source=args.source,
                           limit=args.limit, smoke_n=args.smoke_n, judge_url=args.judge,
                           judge_model=args.judge_model, judge_api_key_env=args.judge_api_key_env,
                           progress=False)
        except (KeyError, ValueError) as e:
            print(f"evals: error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
            return EXIT_USER_ERROR
        print(json.dumps({"benchmark": s["benchmark"], "n": s["n"], "accuracy": s["accuracy"],
                          "rule_metrics": s["rule_metrics"], "judge_metrics": s["judge_metrics"],
                          "out": str(args.out)}))
        return 0
    from evals.runner import run
    if args.max_new_tokens is None:
        args.max_new_tokens = default_max_new_tokens(args.profile, args.model, args.source)
    args.out = args.out or default_out(args.model)
    args.device = resolve_device(args.device)
    vllm_flags = {k: getattr(args, k) for k in ("gpu_memory_utilization", "tensor_parallel_size", "max_model_len")
                  if getattr(args, k) is not None}
    if vllm_flags and args.engine != "vllm":
        print(f"evals: error: --{next(iter(vllm_flags)).replace('_', '-')} is a setting of --engine vllm",
              file=sys.stderr)
        return EXIT_USER_ERROR
    args.dtype = args.dtype or ("bfloat16" if args.engine == "vllm" else "float32")
    temperature = args.temperature if args.temperature is not None else (1.0 if args.mode == "sample" else 0.0)
    try:
        summaries = run(args.model, args.benchmarks, out_dir=args.out, limit=args.limit, engine=args.engine,
                        source=args.source, mode=args.mode, k=args.k, temperature=temperature, top_p=args.top_p,
                        max_new_tokens=args.max_new_tokens, judge_url=args.judge, judge_model=args.judge_model,
                        judge_api_key_env=args.judge_api_key_env,
                        batch_size=args.batch_size, system=args.system, seed=args.seed, device=args.device,
                        dtype=args.dtype, smoke_n=args.smoke_n, progress=not args.no_progress,
                        tool_rounds=args.tool_rounds,
                        vllm=VLLMSettings(**vllm_flags) if args.engine == "vllm" else None)
    except (KeyError, ValueError) as e:  # unknown names, bad settings (EvalConfigError names the file)
        print(f"evals: error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return EXIT_USER_ERROR
    rows = [(name, s["n"], f"{s['accuracy']:.2f}", f"[{s['ci95'][0]:.1f}, {s['ci95'][1]:.1f}]",
             s["headline"], f"{(s['metrics'].get(s['headline'], s['accuracy'])):.2f}")
            + ((_side(s, "rule"), _side(s, "judge")) if args.judge else ())
            for name, s in summaries.items()]
    headers = ["benchmark", "n", "accuracy", "95% CI", "headline", "value"]
    print(tabulate(rows, headers=headers + (["rule", "judge"] if args.judge else [])))
    print(json.dumps({"out": str(args.out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
