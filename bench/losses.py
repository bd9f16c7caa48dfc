"""Time and peak memory of the chunked full-vocabulary losses against a naive implementation.

    python bench/losses.py [--device cuda] [--n N --h H --v V] [--repeats R] [--chunk-size C]

For each size (default on CPU: N=2048, H=256, V=32768 and a Qwen-width N=512, V=151936),
forward + backward of a token-mean loss with the student given as (hidden (1, N, H), lm_head
weight (V, H)) and a frozen teacher given the same way, for:

- ``matmul``: the bare lm_head matmul, forward + backward (the reference of the ratios);
- ``naive-*``: logits materialised whole, plain autograd;
- ``chunked-*``: ``harness.losses`` (custom autograd over token chunks, logits recomputed
  in backward);
- ``liger-jsd``: liger-kernel's fused linear JSD, when ``import liger_kernel`` works (CUDA only).

Ratios are against ``matmul`` measured in the same run. Peak memory is the peak *above* the
memory held before the call (inputs, weights): on CUDA ``torch.cuda.max_memory_allocated``; on
CPU the process's peak resident set (VmHWM in /proc/self/status, reset before each call through
/proc/self/clear_refs, with malloc_trim first), which counts every allocation torch makes.
Times are medians over ``--repeats`` after one warm-up call.
"""
from __future__ import annotations

import argparse
import ctypes
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness.losses import HiddenHead, agg_loss, full_kl, jsd, topk_jsd  # noqa: E402

try:
    from tabulate import tabulate
except ImportError:  # pragma: no cover
    tabulate = None

_LOG2 = math.log(2.0)


# ---- memory probes ------------------------------------------------------------------------

class CpuPeak:
    """Peak resident set above the level before the call (Linux /proc)."""

    name = "CPU peak RSS above start (VmHWM, reset via /proc/self/clear_refs)"

    def __init__(self) -> None:
        try:
            self._trim = ctypes.CDLL("libc.so.6").malloc_trim
        except OSError:  # pragma: no cover
            self._trim = lambda _: None

    @staticmethod
    def _status(key: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f"{key} not in /proc/self/status")

    def start(self) -> None:
        self._trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        self.base = self._status("VmRSS")

    def peak(self) -> int:
        return self._status("VmHWM") - self.base


class CudaPeak:
    name = "CUDA torch.cuda.max_memory_allocated above start"

    def start(self) -> None:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.base = torch.cuda.memory_allocated()

    def peak(self) -> int:
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - self.base


# ---- implementations (each returns a scalar loss; the caller runs backward) ------------------

def naive(kind: str):
    def run(h, w, ht, wt, mask):
        lp = torch.log_softmax((h @ w.t()).float(), -1)
        with torch.no_grad():
            lq = torch.log_softmax((ht @ wt.t()).float(), -1)
        p = lp.exp()
        if kind == "rkl":
            per_tok = (p * (lp - lq)).sum(-1)
        else:
            q = lq.exp()
            lm = torch.logaddexp(lp, lq) - _LOG2
            per_tok = 0.5 * (p * (lp - lm) + q * (lq - lm)).sum(-1)
        return agg_loss(per_tok, mask)

    return run


def chunked(kind: str, chunk_size: int | None):
    def run(h, w, ht, wt, mask):
        s, t = HiddenHead(h, w), HiddenHead(ht, wt)
        if kind == "rkl":
            per_tok = full_kl(s, t, mask, "reverse", chunk_size)
        elif kind == "jsd":
            per_tok = jsd(s, t, mask, chunk_size)
        else:
            per_tok = topk_jsd(s, t, mask, k=100, chunk_size=chunk_size)
        return agg_loss(per_tok, mask)

    return run


def bare_matmul(h, w, ht, wt, mask):
    return (h @ w.t()).sum()


def liger_jsd():
    try:
        from liger_kernel.transformers import LigerFusedLinearJSD
    except Exception as e:  # noqa: BLE001 - any import failure means "not available"
        return None, f"liger-kernel not available ({type(e).__name__})"
    fn = LigerFusedLinearJSD(jsd_beta=0.5)

    def run(h, w, ht, wt, mask):
        return fn(h.view(-1, h.shape[-1]), w, ht.view(-1, ht.shape[-1]), wt)

    return run, ""


# ---- measurement ---------------------------------------------------------------------------

def measure(fn: Callable, inputs: tuple, probe, repeats: int, sync: Callable[[], None]):
    h, w = inputs[0], inputs[1]

    def once():
        h.grad = w.grad = None
        loss = fn(*inputs)
        loss.backward()
        return loss.detach()

    value = once()  # warm-up
    times, peaks = [], []
    for _ in range(repeats):
        h.grad = w.grad = None
        probe.start()
        sync()
        t0 = time.perf_counter()
        once()
        sync()
        times.append(time.perf_counter() - t0)
        peaks.append(probe.peak())
    return statistics.median(times), max(peaks), float(value)


def bench_size(n: int, hdim: int, v: int, device: str, dtype: torch.dtype, repeats: int,
               chunk_size: int | None, probe, with_liger: bool) -> list[list]:
    g = torch.Generator(device="cpu").manual_seed(0)
    mk = lambda *shape, s=1.0: (torch.randn(*shape, generator=g) * s).to(device=device, dtype=dtype)
    h = mk(1, n, hdim).requires_grad_()
    w = mk(v, hdim, s=hdim ** -0.5).requires_grad_()
    ht, wt = mk(1, n, hdim), mk(v, hdim, s=hdim ** -0.5)
    mask = torch.ones(1, n, device=device)
    inputs = (h, w, ht, wt, mask)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    cases: list[tuple[str, Callable | None, str]] = [("matmul", bare_matmul, "")]
    for kind in ("rkl", "jsd"):
        cases += [(f"naive-{kind}", naive(kind), ""), (f"chunked-{kind}", chunked(kind, chunk_size), "")]
    cases.append(("chunked-topk100-jsd", chunked("topk", chunk_size), ""))
    if with_liger:
        fn, why = liger_jsd() if device == "cuda" else (None, "liger-kernel needs CUDA")
        cases.append(("liger-jsd", fn, why))

    rows, base_t, base_m, values = [], None, None, {}
    for name, fn, why in cases:
        if fn is None:
            rows.append([f"{n}x{hdim}x{v}", name, "-", "-", "-", "-", why])
            continue
        t, m, val = measure(fn, inputs, probe, repeats, sync)
        if name == "matmul":
            base_t, base_m = t, m
        values[name] = val
        note = ""
        if name.startswith("chunked-") and name.replace("chunked", "naive") in values:
            note = f"|loss - naive| = {abs(val - values[name.replace('chunked', 'naive')]):.1e}"
        rows.append([f"{n}x{hdim}x{v}", name, f"{t * 1e3:.0f}", f"{t / base_t:.2f}", f"{m / 2**20:.0f}",
                     f"{m / base_m:.2f}" if base_m > 0 else "-", note])
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--n", type=int, help="tokens (default: the device's preset sizes)")
    ap.add_argument("--h", type=int, help="hidden size")
    ap.add_argument("--v", type=int, help="vocabulary size")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                    help="hidden/weight dtype (default float32 on CPU, bfloat16 on CUDA)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per case (default 1 on CPU, 5 on CUDA)")
    ap.add_argument("--chunk-size", type=int, default=None, help="tokens per chunk (default: ~128 MiB of logits)")
    args = ap.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device")
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device == "cuda" else "float32"))
    repeats = args.repeats or (5 if args.device == "cuda" else 1)
    if args.n or args.h or args.v:
        sizes = [(args.n or 2048, args.h or 256, args.v or 32768)]
    elif args.device == "cuda":
        sizes = [(8192, 2048, 151936), (16384, 4096, 151936)]
    else:
        sizes = [(2048, 256, 32768), (512, 256, 151936)]
    probe = CudaPeak() if args.device == "cuda" else CpuPeak()

    rows = []
    for i, (n, hdim, v) in enumerate(sizes):
        rows += bench_size(n, hdim, v, args.device, dtype, repeats, args.chunk_size, probe, with_liger=True)
    headers = ["N x H x V", "case", "time ms", "time / matmul", "peak MiB", "peak / matmul", "note"]
    dev = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {dev}; dtype {dtype}; torch {torch.__version__}; median of {repeats} after 1 warm-up")
    print(f"memory: {probe.name}")
    print(tabulate(rows, headers=headers) if tabulate else "\n".join(map(str, [headers, *rows])))


if __name__ == "__main__":
    main()
