"""Soak test of issue 17 (slow suite, bounded in time): kill -9 at >= 20 random points across a smoke
GRPO run, a VOLD pipeline (traces -> SFT -> RL: its stage changes) and an evaluation. After each
kill the job is rerun (resumed) until it finishes; then, every time:

- the final weights (and the VOLD traces) are bit-identical to the uninterrupted run's;
- metrics steps are unique and consecutive;
- no evaluation sample whose record was written is generated again (0 recomputed), and the
  records equal the uninterrupted evaluation's;
- nothing is left that blocks a rerun: no temporary directory, no set-aside checkpoint, and the
  rerun of the finished job is a no-op that succeeds.

The jobs run in children forked from ``tests/soak_zygote.py`` (imports done once). Run with ``-s``
to see the kill points.
"""
from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import safetensors.torch
import torch

from harness.jsonl import read_jsonl

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
KILLS = {"grpo": 8, "vold": 8, "eval": 6}
assert sum(KILLS.values()) >= 20
TIME_BUDGET_S = 300  # all kills, reruns and reference runs together (CI: soak + fuzz <= 6 min)


class Zygote:
    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "soak_zygote.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)

    def _line(self, timeout: float | None) -> dict | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        assert line, "the zygote died"
        return json.loads(line)

    def run(self, job: str, out: Path, kill_when: Callable[[], bool] | None = None, delay: float = 0.0
            ) -> tuple[bool, float]:
        """Run ``job`` in a fresh child; SIGKILL it ``delay`` s after ``kill_when()`` first holds
        (polled every 20 ms; None: never). Returns (killed?, seconds)."""
        t0 = time.monotonic()
        self.proc.stdin.write(json.dumps({"job": job, "out": str(out)}) + "\n")
        self.proc.stdin.flush()
        pid = self._line(120)["pid"]
        deadline = None
        while True:
            if kill_when is None:
                wait = None
            elif deadline is None:
                wait = 0.02
            else:
                wait = max(0.0, deadline - time.monotonic())
            done = self._line(wait)
            if done is not None:
                break
            if deadline is None and kill_when is not None and kill_when():
                deadline = time.monotonic() + delay
            if deadline is not None and time.monotonic() >= deadline:
                break
        killed = done is None
        if killed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended (and the zygote reaped it) just before the kill
                pass
            done = self._line(120)
        assert done["pid"] == pid
        err = Path(f"{out}.err")
        if not killed:
            assert done["status"] == 0, err.read_text() if err.exists() else done
        else:
            assert done["status"] in (-signal.SIGKILL, 0), done
            killed = done["status"] == -signal.SIGKILL
        return killed, time.monotonic() - t0

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def zygote():
    z = Zygote()
    yield z
    z.close()


def weights(final: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(final / "model.safetensors"))


def assert_identical(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), f"{b} differs from {a}"


def assert_steps(run: Path) -> None:
    steps = [r["step"] for r in read_jsonl(run / "metrics.jsonl")]
    assert steps == list(range(1, len(steps) + 1)) and steps, f"{run}: metrics steps {steps}"


def assert_nothing_left(out: Path) -> None:
    leftovers = [p for p in out.rglob(".*") if p.name.endswith((".tmp", ".bad")) or ".tmp" in p.name]
    assert not leftovers, leftovers


def recorded_ids(out: Path) -> set[str]:
    path = out / "mmstar" / "records.jsonl"
    return {r["id"] for r in read_jsonl(path, torn_tail=True, missing_ok=True)}


def generated_ids(out: Path) -> list[str]:
    log = out.parent / f"{out.name}.generated.log"
    return log.read_text().split() if log.exists() else []


def progress(job: str, out: Path) -> str:
    """Where a killed job stood (for the report)."""
    if job == "eval":
        return f"{len(recorded_ids(out))} records"
    runs = [out] if job == "grpo" else [out / "sft", out / "rl"]
    parts = [] if job == "grpo" else [f"traces {'done' if (out / 'traces' / 'COMPLETE').exists() else 'open'}"]
    for run in runs:
        n = len(read_jsonl(run / "metrics.jsonl", torn_tail=True, missing_ok=True))
        parts.append(f"{run.name}:{n} steps{' done' if (run / 'COMPLETE').exists() else ''}")
    return ", ".join(parts)


def lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def progress_units(job: str, out: Path) -> int:
    """How far a job got, in units of work: steps logged (GRPO), records written (evaluation),
    traces done + SFT steps + SFT done + RL steps (VOLD)."""
    if job == "grpo":
        return lines(out / "metrics.jsonl")
    if job == "eval":
        return lines(out / "mmstar" / "records.jsonl")
    return (int((out / "traces" / "COMPLETE").exists()) + lines(out / "sft" / "metrics.jsonl")
            + int((out / "sft" / "COMPLETE").exists()) + lines(out / "rl" / "metrics.jsonl"))


def check_finished(job: str, out: Path, ref: Path) -> None:
    assert_nothing_left(out)
    if job == "grpo":
        assert_identical(ref / "final", out / "final")
        assert_steps(out)
    elif job == "vold":
        data = sorted((ref / "traces" / "final").iterdir())
        assert [p.name for p in data] == sorted(p.name for p in (out / "traces" / "final").iterdir())
        for p in data:
            if p.suffix == ".jsonl":
                assert p.read_bytes() == (out / "traces" / "final" / p.name).read_bytes()
        for stage in ("sft", "rl"):
            assert_identical(ref / stage / "final", out / stage / "final")
            assert_steps(out / stage)
    else:
        def strip(rec: dict) -> dict:
            return {k: v for k, v in rec.items() if k != "time_s"}

        mine = read_jsonl(out / "mmstar" / "records.jsonl")
        assert len({r["id"] for r in mine}) == len(mine)
        theirs = {r["id"]: strip(r) for r in read_jsonl(ref / "mmstar" / "records.jsonl")}
        assert {r["id"]: strip(r) for r in mine} == theirs
        summary = json.loads((out / "mmstar" / "summary.json").read_text())
        assert summary["n"] == len(theirs)


@pytest.mark.parametrize("job", sorted(KILLS))
def test_kill_9_at_random_points_changes_nothing(job, zygote, tmp_path):
    rng = random.Random(f"soak-{job}")
    t_start = time.monotonic()
    ref = tmp_path / "reference"
    killed, duration = zygote.run(job, ref)
    assert not killed
    total = progress_units(job, ref)
    kills: list[str] = []
    cycle = 0
    while len(kills) < KILLS[job]:
        out = tmp_path / f"killed{cycle}"
        cycle += 1
        while True:
            assert time.monotonic() - t_start < TIME_BUDGET_S, f"soak {job}: over its time budget ({kills})"
            before = recorded_ids(out) if job == "eval" else set()
            n_generated = len(generated_ids(out))
            done_units = progress_units(job, out)
            kill_when, delay, point = None, 0.0, ""
            if len(kills) < KILLS[job] and done_units < total:
                if rng.random() < 0.25:  # in the start-up (loading, resuming)
                    delay = rng.uniform(0.05, 2.5)
                    kill_when, point = (lambda: True), f"start+{delay:.2f}s"
                else:  # at a random moment while working on unit `target`
                    target = rng.randint(done_units, total - 1)
                    delay = rng.uniform(0.0, 0.15 if job == "eval" else 0.8)  # about one unit's time
                    kill_when = (lambda t=target: progress_units(job, out) >= t)
                    point = f"unit {target}/{total}+{delay:.2f}s"
            was_killed, _ = zygote.run(job, out, kill_when, delay)
            if job == "eval":  # nothing recorded before this attempt was generated again in it
                again = set(generated_ids(out)[n_generated:]) & before
                assert not again, f"recomputed after a kill: {sorted(again)}"
            if not was_killed:
                break
            kills.append(f"{point} ({progress(job, out)})")
        check_finished(job, out, ref)
        n_generated = len(generated_ids(out))
        rerun_killed, _ = zygote.run(job, out)  # a rerun of the finished job: a no-op that succeeds
        assert not rerun_killed
        assert len(generated_ids(out)) == n_generated, "the rerun of a finished evaluation generated again"
        check_finished(job, out, ref)
    print(f"\n{job}: uninterrupted {duration:.1f}s, {total} units; {len(kills)} kills at {'; '.join(kills)}; "
          f"{cycle} cycle(s), {time.monotonic() - t_start:.0f}s in all")
