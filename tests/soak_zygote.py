"""Child-process factory of the soak test (tests/test_soak.py): imports the heavy modules once, then
forks one child per job so that each of the many killed runs starts in milliseconds.

Protocol (JSON lines): stdin ``{"job": NAME, "out": DIR}`` -> stdout ``{"pid": PID}`` at once and
``{"pid": PID, "status": S}`` when the child ends (S: exit code, or minus the signal that ended it).
The zygote itself never runs a model (forking after torch has started worker threads is unsafe);
a child's traceback goes to ``DIR.err``.
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import evals  # noqa: E402
import evals.runner  # noqa: E402
from methods.grpo.config import PROFILES as GRPO_PROFILES, GRPOConfig  # noqa: E402
from methods.grpo.trainer import train as train_grpo  # noqa: E402
from methods.registry import load_method_config  # noqa: E402
from methods.vold import train_rl, train_sft, train_traces  # noqa: E402

GRPO = {"steps": 4, "save_every": 2}
VOLD_SFT = {"steps": 4, "data_limit": 8, "save_every": 2}
VOLD_RL = {"steps": 4, "save_every": 2}
EVAL = {"benchmarks": "mmstar", "smoke_n": 8, "batch_size": 1, "max_new_tokens": 16}
GENERATED_LOG = "generated.log"


def job_grpo(out: Path) -> None:
    train_grpo(load_method_config(GRPOConfig, GRPO_PROFILES, "smoke", overrides=GRPO), out)


def job_vold(out: Path) -> None:
    """Three stages chained: each stage change (traces -> SFT -> RL) is a point to be killed at."""
    traces = train_traces({"data_limit": 8}, out / "traces", "smoke")
    sft = train_sft({"teacher": str(traces), **VOLD_SFT}, out / "sft", "smoke")
    train_rl({"model": str(sft), **VOLD_RL}, out / "rl", "smoke")


def job_eval(out: Path) -> None:
    """evals.run with every generated sample id logged (fsynced) before it is generated."""
    real = evals.runner.make_engine
    log = out.parent / f"{out.name}.{GENERATED_LOG}"

    def make_engine(*a, **kw):
        engine = real(*a, **kw)
        generate = engine.generate

        def logged(samples, sampling):
            with open(log, "a") as f:
                f.write("".join(s.id + "\n" for s in samples))
                f.flush()
                os.fsync(f.fileno())
            return generate(samples, sampling)

        engine.generate = logged
        return engine

    evals.runner.make_engine = make_engine
    evals.run("smoke:qwen2_5_vl", EVAL["benchmarks"], out_dir=out, source="smoke", smoke_n=EVAL["smoke_n"],
              batch_size=EVAL["batch_size"], max_new_tokens=EVAL["max_new_tokens"], progress=False)


JOBS = {"grpo": job_grpo, "vold": job_vold, "eval": job_eval}


def child(job: str, out: Path) -> None:
    code = 1
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        torch.set_num_threads(1)
        JOBS[job](out)
        code = 0
    except BaseException:  # noqa: BLE001 - reported to the test through the .err file
        Path(f"{out}.err").write_text(traceback.format_exc())
    finally:
        os._exit(code)


def main() -> None:
    reply = sys.stdout
    for line in sys.stdin:
        req = json.loads(line)
        out = Path(req["out"])
        pid = os.fork()
        if pid == 0:
            child(req["job"], out)
        reply.write(json.dumps({"pid": pid}) + "\n")
        reply.flush()
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        reply.write(json.dumps({"pid": pid, "status": code}) + "\n")
        reply.flush()


if __name__ == "__main__":
    main()
