"""Time and peak memory of the full-vocabulary losses (fused and chunked) against the matmul floor.

    python bench/losses.py [--device cuda] [--n N --h H --v V] [--dtype float32,bfloat16]
                           [--repeats R] [--chunk-size C] [--cases a,b,...] [--out FILE.md]

For each size (default on CPU: H=1024, V=151936, N in {512, 2048}; on CUDA N=32768, H=2048,
V=151936) and dtype, forward + backward of a token-mean loss with the student given as
(hidden (1, N, H), lm_head weight (V, H)) and a frozen teacher given the same way, for:

- ``matmul``: the bare student lm_head matmul, forward + backward (3 N x H x V matmuls);
- ``floor``: the matmuls no implementation can avoid: the student lm_head forward + backward
  plus the teacher lm_head forward, as 4 bare N x H x V matmuls (the student's logits reused
  as the upstream gradient: no elementwise work; the time ratios' reference);
- ``fused-matmuls``: the fused path's chunk loop with a kernel that does no elementwise work (its
  logit gradient is the logits themselves): the 4 matmuls as the fused path runs them, chunk by
  chunk with the weight gradient accumulated in place, so ``fused-<loss>`` minus this is that
  loss's elementwise cost and this minus ``floor`` the cost of chunking;
- ``naive-*``: logits materialised whole, plain autograd;
- ``chunked-*``: ``harness.losses``' reference path (custom autograd over token chunks, logits
  recomputed in backward: 6 matmuls);
- ``fused-*``: ``harness.losses``' fused path (``token_weights=agg_weights(mask)``: the gradients
  with respect to hidden and weight computed during the forward: 4 matmuls);
- ``liger-jsd``: liger-kernel's fused linear JSD, when ``import liger_kernel`` works (CUDA only).

Ratios are against ``floor`` and ``matmul`` measured in the same run. Peak memory is the peak
*above* the memory held before the call (inputs, weights; gradients are counted): on CUDA
``torch.cuda.max_memory_allocated``; on CPU the process's peak resident set (VmHWM in
/proc/self/status, reset before each call through /proc/self/clear_refs, with malloc_trim
first), which counts every allocation torch makes. Times are the minimum over ``--repeats``
calls after one warm-up call (the least disturbed call when cores are shared); peaks the maximum. A case that runs out of memory is reported as OOM. ``--out`` also writes the
table, the targets of issue 18 (met or not, computed from the table) and the command to a
Markdown file.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness.losses import (HiddenHead, _eager_under_auto, _per_token, agg_loss, agg_weights,  # noqa: E402
                            entropy, full_kl, jsd, topk_jsd)

try:
    from tabulate import tabulate
except ImportError:  # pragma: no cover
    tabulate = None

_LOG2 = math.log(2.0)
ALL_CASES = ("matmul", "floor", "naive-rkl", "naive-jsd", "chunked-rkl", "chunked-fkl", "chunked-jsd",
             "chunked-topk100-jsd", "fused-rkl", "fused-fkl", "fused-jsd", "fused-topk100-jsd", "fused-entropy",
             "fused-matmuls", "liger-jsd")
FAST_CASES = ("matmul", "floor", "fused-matmuls", "fused-rkl", "fused-fkl", "fused-jsd", "fused-topk100-jsd")
"""The cases of the CPU preset's large size (the naive and chunked ones take too long on the CPU)."""


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


def _harness(kind: str, chunk_size: Optional[int], fused: bool):
    """A ``harness.losses`` case: the reference path aggregated by ``agg_loss``, or the fused
    path with the same token-mean as ``token_weights``."""

    def run(h, w, ht, wt, mask):
        s, t = HiddenHead(h, w), HiddenHead(ht, wt)
        kw = {"token_weights": agg_weights(mask)} if fused else {}
        if kind == "rkl":
            out = full_kl(s, t, mask, "reverse", chunk_size, **kw)
        elif kind == "fkl":
            out = full_kl(s, t, mask, "forward", chunk_size, **kw)
        elif kind == "jsd":
            out = jsd(s, t, mask, chunk_size, **kw)
        elif kind == "topk100-jsd":
            out = topk_jsd(s, t, mask, k=100, chunk_size=chunk_size, **kw)
        else:
            out = entropy(s, mask, chunk_size, **kw)
        return out.loss if fused else agg_loss(out, mask)

    return run


def bare_matmul(h, w, ht, wt, mask):
    return (h @ w.t()).sum()


class _Floor(torch.autograd.Function):
    """The 4 unavoidable matmuls and nothing else: forward z = h W^T and the teacher's
    z_t = h_t W_t^T; backward grad_h = G W and grad_W = G^T h with the logits buffer itself as
    the upstream gradient G (no elementwise pass is timed besides the sum that makes a scalar)."""

    @staticmethod
    def forward(ctx, h, w, ht, wt):
        h2 = h.reshape(-1, h.shape[-1])
        z = h2 @ w.t()
        zt = ht.reshape(-1, ht.shape[-1]) @ wt.t()
        del zt
        ctx.save_for_backward(z, h2, w)
        ctx.shape = h.shape
        return z.sum()

    @staticmethod
    def backward(ctx, g):
        z, h2, w = ctx.saved_tensors
        return (z @ w).mul_(g).view(ctx.shape), (z.t() @ h2).mul_(g), None, None


@_eager_under_auto  # nothing to compile
def _no_elementwise_kernel(zs, zt, grad: bool):
    """A kernel with no elementwise work: value 0, logit gradient = the logits' own buffer."""
    return zs.new_zeros(zs.shape[0]), (zs if grad else None)


def fused_matmuls(h, w, ht, wt, mask):
    """The fused path's chunked matmuls and gradient accumulation alone (see the module docstring)."""
    return _per_token(_no_elementwise_kernel, HiddenHead(h, w), HiddenHead(ht, wt), mask, None,
                      token_weights=agg_weights(mask)).loss


def floor(h, w, ht, wt, mask):
    """Student lm_head forward + backward and teacher lm_head forward: the 4 unavoidable matmuls."""
    return _Floor.apply(h, w, ht, wt)


def liger_jsd():
    try:
        from liger_kernel.transformers import LigerFusedLinearJSD
    except Exception as e:  # noqa: BLE001 - any import failure means "not available"
        return None, f"liger-kernel not available ({type(e).__name__})"
    fn = LigerFusedLinearJSD(jsd_beta=0.5)

    def run(h, w, ht, wt, mask):
        return fn(h.view(-1, h.shape[-1]), w, ht.view(-1, ht.shape[-1]), wt)

    return run, ""


def case_fn(name: str, device: str, chunk_size: Optional[int]) -> tuple[Optional[Callable], str]:
    """The function of a case name (None and the reason when it cannot run here)."""
    if name == "matmul":
        return bare_matmul, ""
    if name == "floor":
        return floor, ""
    if name == "fused-matmuls":
        return fused_matmuls, ""
    if name == "liger-jsd":
        return liger_jsd() if device == "cuda" else (None, "liger-kernel needs CUDA")
    family, kind = name.split("-", 1)
    if family == "naive":
        return naive(kind), ""
    return _harness(kind, chunk_size, fused=family == "fused"), ""


# ---- measurement ---------------------------------------------------------------------------

def _oom_types() -> tuple[type, ...]:
    return (torch.OutOfMemoryError, MemoryError) if hasattr(torch, "OutOfMemoryError") else (MemoryError,)


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
    h.grad = w.grad = None
    return min(times), max(peaks), float(value)


def bench_size(n: int, hdim: int, v: int, device: str, dtype: torch.dtype, repeats: int,
               chunk_size: Optional[int], probe, cases: tuple[str, ...]) -> list[dict]:
    """One row per case: time (s), peak (bytes), loss value, ratios to floor / matmul."""
    g = torch.Generator(device="cpu").manual_seed(0)
    mk = lambda *shape, s=1.0: (torch.randn(*shape, generator=g) * s).to(device=device, dtype=dtype)
    h = mk(1, n, hdim).requires_grad_()
    w = mk(v, hdim, s=hdim ** -0.5).requires_grad_()
    ht, wt = mk(1, n, hdim), mk(v, hdim, s=hdim ** -0.5)
    mask = torch.ones(1, n, device=device)
    inputs = (h, w, ht, wt, mask)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    order = [c for c in ("matmul", "floor") if c in cases] + [c for c in cases if c not in ("matmul", "floor")]

    rows, values = [], {}
    for name in order:
        row = {"size": f"{n}x{hdim}x{v}", "dtype": str(dtype).replace("torch.", ""), "case": name,
               "t": None, "peak": None, "value": None, "note": ""}
        fn, why = case_fn(name, device, chunk_size)
        if fn is None:
            row["note"] = why
        else:
            try:
                row["t"], row["peak"], row["value"] = measure(fn, inputs, probe, repeats, sync)
                values[name] = row["value"]
            except _oom_types() as e:
                row["note"] = f"OOM ({type(e).__name__})"
                h.grad = w.grad = None
                if device == "cuda":
                    torch.cuda.empty_cache()
        ref = {"fused": "chunked", "chunked": "naive"}.get(name.split("-")[0])
        other = f"{ref}-{name.split('-', 1)[1]}" if ref else None
        if row["value"] is not None and other in values:
            row["note"] = f"|loss - {other}| = {abs(row['value'] - values[other]):.1e}"
        rows.append(row)
        print(_fmt([row], rows)[0], flush=True)
    return rows


def _fmt(rows: list[dict], context: list[dict]) -> list[list]:
    """Table rows; ratios against the ``floor`` / ``matmul`` of the same size and dtype."""
    out = []
    for r in rows:
        base = {c["case"]: c for c in context if c["size"] == r["size"] and c["dtype"] == r["dtype"]}
        fl, mm = base.get("floor", {}), base.get("matmul", {})
        ratio = lambda a, b: f"{a / b:.2f}" if a is not None and b else "-"
        out.append([r["size"], r["dtype"], r["case"], "-" if r["t"] is None else f"{r['t'] * 1e3:.0f}",
                    ratio(r["t"], fl.get("t")), ratio(r["t"], mm.get("t")),
                    "-" if r["peak"] is None else f"{r['peak'] / 2**20:.0f}", ratio(r["peak"], mm.get("peak")),
                    r["note"]])
    return out


HEADERS = ["N x H x V", "dtype", "case", "time ms", "time / floor", "time / matmul", "peak MiB",
           "peak / matmul", "note"]


def targets(rows: list[dict]) -> list[str]:
    """Issue 18's targets, each as a line saying met / not met with the numbers."""
    lines = []
    groups = sorted({(r["size"], r["dtype"]) for r in rows}, key=lambda g: (int(g[0].split("x")[0]), g[1]))
    for size, dt in groups:
        b = {r["case"]: r for r in rows if r["size"] == size and r["dtype"] == dt and r["t"] is not None}
        head = f"{size} {dt}"
        if "floor" in b:
            for c in ("fused-rkl", "fused-fkl", "fused-jsd"):
                if c in b:
                    x = b[c]["t"] / b["floor"]["t"]
                    lines.append(f"{head}: {c} time {x:.2f}x floor (target <= 1.2): {'met' if x <= 1.2 else 'NOT met'}")
        if "floor" in b and "fused-matmuls" in b:
            fl, mm = b["floor"]["t"], b["fused-matmuls"]["t"]
            parts = [f"chunked matmuls {mm / fl:.2f}x floor"] + [
                f"{c} elementwise {(b[c]['t'] - mm) / fl:+.2f}" for c in
                ("fused-rkl", "fused-fkl", "fused-jsd", "fused-topk100-jsd") if c in b]
            lines.append(f"{head}: where the time goes (x floor): " + ", ".join(parts))
        if "fused-topk100-jsd" in b and "fused-jsd" in b:
            x = b["fused-topk100-jsd"]["t"] / b["fused-jsd"]["t"]
            lines.append(f"{head}: fused-topk100-jsd time {x:.2f}x fused-jsd (target <= 1): {'met' if x <= 1 else 'NOT met'}")
        if "matmul" in b and b["matmul"]["peak"]:
            for c in ("fused-rkl", "fused-fkl", "fused-jsd", "fused-topk100-jsd"):
                if c in b:
                    x = b[c]["peak"] / b["matmul"]["peak"]
                    verdict = ("met" if x <= 1.2 else "NOT met") if dt == "float32" else "stated, not targeted"
                    lines.append(f"{head}: {c} peak {x:.2f}x matmul (fp32 target <= 1.2): {verdict}")
    return lines


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--n", type=int, help="tokens (default: the device's preset sizes)")
    ap.add_argument("--h", type=int, help="hidden size")
    ap.add_argument("--v", type=int, help="vocabulary size")
    ap.add_argument("--dtype", default=None,
                    help="comma-separated hidden/weight dtypes (default float32,bfloat16 on CPU, bfloat16 on CUDA)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per case (default 1 on CPU, 5 on CUDA)")
    ap.add_argument("--chunk-size", type=int, default=None,
                    help="tokens per chunk (default: harness.losses.CHUNK_BYTES of fp32 logits)")
    ap.add_argument("--cases", default=None, help=f"comma-separated cases (default: all; known: {','.join(ALL_CASES)})")
    ap.add_argument("--out", default=None, help="also write a Markdown record here")
    ap.add_argument("--note", default="", help="free text for the record's Notes section (e.g. the machine's load)")
    args = ap.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device")
    dtypes = [getattr(torch, d) for d in (args.dtype or ("bfloat16" if args.device == "cuda" else "float32,bfloat16")).split(",")]
    repeats = args.repeats or (5 if args.device == "cuda" else 1)
    chosen = tuple(args.cases.split(",")) if args.cases else None
    if chosen and set(chosen) - set(ALL_CASES):
        sys.exit(f"unknown cases {sorted(set(chosen) - set(ALL_CASES))}; known: {ALL_CASES}")
    if args.n or args.h or args.v:
        sizes = [(args.n or 512, args.h or 1024, args.v or 151936, chosen or ALL_CASES)]
    elif args.device == "cuda":
        sizes = [(32768, 2048, 151936, chosen or ALL_CASES)]
    else:
        sizes = [(512, 1024, 151936, chosen or ALL_CASES), (2048, 1024, 151936, chosen or FAST_CASES)]
    probe = CudaPeak() if args.device == "cuda" else CpuPeak()
    dev = (torch.cuda.get_device_name() if args.device == "cuda"
           else f"CPU ({_cpu_model()}, {os.cpu_count()} cores), {torch.get_num_threads()} threads")
    print(f"device: {dev}; torch {torch.__version__}; min of {repeats} after 1 warm-up", flush=True)

    rows: list[dict] = []
    for n, hdim, v, cases in sizes:
        for dtype in dtypes:
            rows += bench_size(n, hdim, v, args.device, dtype, repeats, args.chunk_size, probe, cases)
    table = _fmt(rows, rows)
    print(tabulate(table, headers=HEADERS) if tabulate else "\n".join(map(str, [HEADERS, *table])))
    lines = targets(rows)
    print("\n".join(lines))
    if args.out:
        md = tabulate(table, headers=HEADERS, tablefmt="github") if tabulate else "\n".join(map(str, table))
        given = list(argv if argv is not None else sys.argv[1:])
        if "--note" in given:
            given[given.index("--note") + 1] = "..."
        cmd = " ".join(["python bench/losses.py", *given])
        Path(args.out).write_text(
            f"# bench/losses.py ({args.device}, {datetime.date.today().isoformat()})\n\n"
            f"Device: {dev}; torch {torch.__version__}; time: min of {repeats} timed call(s) after 1 warm-up.\n"
            f"Command: `{cmd}`.\nMemory: {probe.name}.\n\n{md}\n\n## Targets (issue 18)\n\n"
            + "".join(f"- {x}\n" for x in lines) + (f"\n## Notes\n\n{args.note}\n" if args.note else ""))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
