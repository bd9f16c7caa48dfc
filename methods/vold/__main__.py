"""``python -m methods.vold --profile smoke|paper --stage traces|sft|rl|all --out DIR [key=value ...]``.

``--stage all`` chains the three stages in ``DIR/traces``, ``DIR/sft`` (on those traces) and
``DIR/rl`` (from the SFT model); overrides then apply to the RL stage only.

The RL stage validates on ``val_benchmark`` (Geo3K, §4.1) with the ``benchmark`` validator of the
``vlmrepro.validators`` entry points (harness.validation.load_validator): this CLI is a
composition root, but methods/ does not import evals.
"""
from __future__ import annotations

import sys
from pathlib import Path

from harness.config import parse_overrides
from harness.validation import load_validator
from methods.registry import method_parser, run_cli
from methods.vold import STAGES, load_stage_config, run_stage


def _validator(cfg: object):
    """The RL stage's validator (resolved by name, only when it validates)."""
    return load_validator("benchmark") if getattr(cfg, "val_every", 0) > 0 else None


def main(argv: list[str] | None = None) -> int:
    p = method_parser("python -m methods.vold", "Train VOLD (one stage or all).", ["smoke", "paper"],
                      "runs/vold-<stage>-<profile>")
    p.add_argument("--stage", default="rl", choices=[*STAGES, "all"])
    args = p.parse_args(argv)
    out = Path(args.out or f"runs/vold-{args.stage}-{args.profile}")

    def run() -> Path | None:
        overrides = parse_overrides(args.overrides)
        if args.stage == "all":
            traces = run_stage("traces", load_stage_config("traces", args.profile), out / "traces")
            sft = run_stage("sft", load_stage_config("sft", args.profile, {"teacher": str(traces)}), out / "sft")
            if sft is None:
                raise RuntimeError("the SFT stage did not finish")
            cfg = load_stage_config("rl", args.profile, {"model": str(sft), **overrides}, args.config)
            return run_stage("rl", cfg, out / "rl", stop_after=args.stop_after, validator=_validator(cfg))
        cfg = load_stage_config(args.stage, args.profile, overrides, args.config)
        return run_stage(args.stage, cfg, out, stop_after=args.stop_after, validator=_validator(cfg))

    return run_cli(run, out, args.stop_after, prog="methods.vold")


if __name__ == "__main__":
    sys.exit(main())
