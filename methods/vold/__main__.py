"""``python -m methods.vold --profile smoke|paper --stage traces|sft|rl|all --out DIR [key=value ...]``.

``--stage all`` chains the three stages in ``DIR/traces``, ``DIR/sft`` (on those traces) and
``DIR/rl`` (from the SFT model); overrides then apply to the RL stage only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.config import ConfigError, parse_overrides
from harness.errors import DataError
from methods.vold import STAGES, load_stage_config, run_stage


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m methods.vold", description="Train VOLD (one stage or all).")
    p.add_argument("--profile", default="smoke", choices=["smoke", "paper"])
    p.add_argument("--stage", default="rl", choices=[*STAGES, "all"])
    p.add_argument("--out", default=None, help="run directory (default runs/vold-<stage>-<profile>); rerun to resume")
    p.add_argument("--config", default=None, help="YAML file of settings, over the profile's")
    p.add_argument("--stop-after", type=int, default=None, help="end this session after N total steps (resumable)")
    p.add_argument("overrides", nargs="*", help="key=value settings, over the file's")
    args = p.parse_args(argv)
    out = Path(args.out or f"runs/vold-{args.stage}-{args.profile}")
    overrides = parse_overrides(args.overrides)
    try:
        if args.stage == "all":
            traces = run_stage("traces", load_stage_config("traces", args.profile), out / "traces")
            sft = run_stage("sft", load_stage_config("sft", args.profile, {"teacher": str(traces)}), out / "sft")
            if sft is None:
                raise RuntimeError("the SFT stage did not finish")
            cfg = load_stage_config("rl", args.profile, {"model": str(sft), **overrides}, args.config)
            final = run_stage("rl", cfg, out / "rl", stop_after=args.stop_after)
        else:
            cfg = load_stage_config(args.stage, args.profile, overrides, args.config)
            final = run_stage(args.stage, cfg, out, stop_after=args.stop_after)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(final if final is not None else f"stopped after {args.stop_after} steps; rerun to resume: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
