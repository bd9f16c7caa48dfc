"""One training stage of a ``reproduce`` run directory, as a torchrun job runs it on every rank:

    python -m torch.distributed.run --nproc-per-node N -m reproduce.stage RUN_DIR STAGE_DIR

Reads the stage from ``RUN_DIR/plan.json`` and finds the upstream stages' outputs in their own
run directories (complete ones only: on several nodes this does not wait on another node's
``state.json``), then calls the method's trainer (``reproduce.launch``)."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from harness.run_dir import RunDir
    from reproduce.plan import Plan
    from reproduce.runner import RunState, _default_train, stage_overrides

    out, stage_dir = (argv if argv is not None else sys.argv[1:])[:2]
    plan = Plan.load(Path(out))
    if stage_dir not in plan.stages:
        raise SystemExit(f"reproduce.stage: {stage_dir!r} is not a stage of {out}/plan.json")
    stage = plan.stages[stage_dir]
    print(f"[reproduce.stage] rank {os.environ.get('RANK', '0')}/{os.environ.get('WORLD_SIZE', '1')}: "
          f"{stage.id} ({stage.method})", flush=True)
    done = RunState()
    for d in plan.stages:
        run = RunDir(Path(out) / d)
        if run.is_complete():
            done.stages[d] = {"status": "done", "final": str(run.final)}
    _default_train(stage.method)(stage_overrides(stage, done), Path(out) / stage_dir, plan.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
