"""Measured vs published, cell by cell, with 95% bootstrap intervals; and the CI regression check.

Status of a cell (in this order):

- ``not run``          nothing was measured (the row's reason says why: needs a checkpoint, not
                       implemented, failed, not selected with --rows, ...);
- ``missing in paper`` the paper prints no number (null in results/published);
- ``agrees``           the published value lies in the measured 95% interval, or
                       |measured - published| <= tolerance;
- ``above`` / ``below`` the measured value is higher / lower than that.

Every cell of the published table is reported: nothing missing is dropped.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from evals.stats import bootstrap_ci
from harness.jsonl import read_jsonl

AGREES, ABOVE, BELOW, NOT_RUN, MISSING = "agrees", "above", "below", "not run", "missing in paper"
STATUSES = (AGREES, ABOVE, BELOW, NOT_RUN, MISSING)
DEFAULT_TOLERANCE = 1.0
"""Percentage points within which a measurement agrees with the paper even outside its interval."""
N_RESAMPLES = 2000


@dataclass
class Measurement:
    """One measured number (percent) with its 95% interval and, when known, per-sample values."""
    value: Optional[float]
    ci95: Optional[tuple[float, float]] = None
    n: Optional[int] = None
    samples: Optional[list[float]] = None
    reason: str = ""
    """Why ``value`` is None (or a caveat on it)."""


@dataclass
class Cell:
    table: str
    group: str
    row: str
    column: str
    published: Optional[float]
    measured: Optional[float]
    delta: Optional[float]
    ci95: Optional[list[float]]
    n: Optional[int]
    status: str
    reason: str = ""
    derived: bool = False
    higher_is_better: bool = True

    @property
    def id(self) -> tuple[str, str, str, str]:
        return (self.table, self.group, self.row, self.column)


def cell_status(published: Optional[float], measured: Optional[float], ci95: Optional[Sequence[float]],
                tolerance: float) -> str:
    """The status of one cell (see the module docstring)."""
    if measured is None or (isinstance(measured, float) and np.isnan(measured)):
        return NOT_RUN
    if published is None:
        return MISSING
    delta = measured - published
    inside = ci95 is not None and not any(np.isnan(ci95)) and ci95[0] <= published <= ci95[1]
    if inside or abs(delta) <= tolerance:
        return AGREES
    return ABOVE if delta > 0 else BELOW


# ----------------------------------------------------------------------------------------------
# Bootstrap


def bootstrap_mean(values: Sequence[float], n_resamples: int = N_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of per-sample values (evals.stats)."""
    return bootstrap_ci(values, n_resamples=n_resamples, alpha=0.05, seed=seed)


def bootstrap_derived(fn: Callable[[np.ndarray], np.ndarray], groups: Sequence[Sequence[float]],
                      n_resamples: int = N_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """95% interval of ``fn(means)`` where each group (a benchmark, a row) is resampled on its own.

    ``fn`` maps an array (n_resamples, len(groups)) of resampled means to (n_resamples,) values,
    e.g. the average of several benchmarks or the difference of two rows.
    """
    rng = np.random.default_rng(seed)
    means = np.empty((n_resamples, len(groups)))
    for j, g in enumerate(groups):
        x = np.asarray(list(g), dtype=float)
        if x.size == 0:
            return (float("nan"), float("nan"))
        means[:, j] = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
    vals = fn(means)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return (float("nan"), float("nan"))
    return (float(np.quantile(vals, 0.025)), float(np.quantile(vals, 0.975)))


# ----------------------------------------------------------------------------------------------
# Reading evaluation outputs

_PER_SAMPLE_KEYS = ("correct", "score", "accuracy", "hit")


def read_records(path: Path) -> list[dict[str, Any]]:
    """An evaluation's ``records.jsonl`` (none when missing); a last line cut by an interrupted
    run is left out, any other bad line raises DataError (file:line)."""
    return read_jsonl(path, torn_tail=True, missing_ok=True)


def per_sample_values(records: list[dict[str, Any]], summary_value: Optional[float]) -> Optional[list[float]]:
    """Per-sample scores in percent, when the records carry one whose mean is the summary's value."""
    for key in _PER_SAMPLE_KEYS:
        vals = [r[key] for r in records if key in r]
        if len(vals) != len(records) or not records:
            continue
        if not all(isinstance(v, (bool, int, float)) and v is not None for v in vals):
            continue
        x = [float(v) for v in vals]
        scale = 100.0 if max(x) <= 1.0 else 1.0
        x = [v * scale for v in x]
        if summary_value is None or abs(float(np.mean(x)) - summary_value) <= 0.05 + 1e-9:
            return x
    return None


def measure(bench_dir: Path, metric: str = "accuracy") -> Measurement:
    """The measurement of ``metric`` in one ``<evals dir>/<benchmark>/`` (summary.json + records)."""
    summary_path = Path(bench_dir) / "summary.json"
    if not summary_path.is_file():
        return Measurement(None, reason=f"no evaluation summary at {summary_path}")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        if not isinstance(summary, dict):
            raise ValueError(f"expected a JSON object, got {type(summary).__name__}")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return Measurement(None, reason=f"{summary_path}: unreadable ({type(e).__name__}: {e}); rerun the evaluation")
    n = summary.get("n")
    if metric == "accuracy":
        value = summary.get("accuracy")
        ci = summary.get("ci95")
        samples = per_sample_values(read_records(Path(bench_dir) / "records.jsonl"), value)
        if samples is not None:
            ci = list(bootstrap_mean(samples))
        return Measurement(None if value is None else float(value), tuple(ci) if ci else None, n, samples)
    metrics = summary.get("metrics", {})
    if metric not in metrics:
        return Measurement(None, n=n, reason=f"{summary_path}: no metric {metric!r} (metrics: {sorted(metrics)})")
    ci = summary.get("metric_ci95", {}).get(metric)
    value = metrics[metric]
    return Measurement(None if value is None else float(value), tuple(ci) if ci else None, n)


# ----------------------------------------------------------------------------------------------
# The table diff


def _num(v: Any) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _derive(kind: str, a: Any, b: Any) -> Any:
    if kind == "difference":
        return a - b
    return 100.0 * (a / b - 1.0)


@dataclass
class TableDiff:
    paper: str
    table: str
    profile: str
    tolerance: float
    cells: list[Cell]
    row_status: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.cells) for s in STATUSES}


def diff_table(published_table: Any, measurements: dict[tuple[str, str], dict[str, Measurement]],
               row_status: dict[tuple[str, str], str], *, paper: str, profile: str,
               tolerance: float = DEFAULT_TOLERANCE, higher_is_better: Optional[dict[str, bool]] = None) -> TableDiff:
    """Compare every cell of ``published_table`` (reproduce.published.Table) with the measurements.

    ``measurements[(group, row)][column]`` for measured (non-derived) cells; ``row_status`` gives
    the reason for rows without measurements. Average/delta columns and delta rows of the
    published table are recomputed from the measurements, with bootstrap intervals when the
    per-sample values are known.
    """
    hib = higher_is_better or {}
    t = published_table
    avg_cols = {a.column: a for a in t.all_averages()}
    delta_cols = {c.key: c.delta for c in t.columns if c.delta is not None}
    meas: dict[tuple[str, str], dict[str, Measurement]] = {k: dict(v) for k, v in measurements.items()}

    def get(group: str, row: str, col: str) -> Measurement:
        m = meas.get((group, row), {}).get(col)
        return m if m is not None else Measurement(None, reason=row_status.get((group, row), "not measured"))

    # derived columns of measured rows first (averages, then deltas), then delta rows
    for r in t.result_rows():
        for col, avg in avg_cols.items():
            parts = [get(r.group, r.key, k) for k in avg.of]
            missing = [k for k, m in zip(avg.of, parts) if m.value is None]
            if missing:
                m = Measurement(None, reason=f"average needs {', '.join(missing)}: "
                                + (parts[avg.of.index(missing[0])].reason or "not measured"))
            else:
                value = float(np.mean([m.value for m in parts]))
                ci = None
                if all(m.samples for m in parts):
                    ci = bootstrap_derived(lambda x: x.mean(axis=1), [m.samples for m in parts])
                m = Measurement(value, ci, reason=f"mean of {', '.join(avg.of)}",
                                samples=None)
            meas.setdefault((r.group, r.key), {})[col] = m
    for r in t.result_rows():
        for col, d in delta_cols.items():
            a, b = get(r.group, r.key, d.of), get(r.group, d.baseline_row, d.of)
            if a.value is None or b.value is None:
                m = Measurement(None, reason=f"{d.kind} needs {r.key} and {d.baseline_row} on {d.of}: "
                                + (a.reason if a.value is None else b.reason))
            elif d.kind == "relative_pct" and b.value == 0:
                m = Measurement(None, reason=f"relative change over {d.baseline_row} = 0 is undefined")
            else:
                ci = None
                if a.samples and b.samples and r.key != d.baseline_row:
                    ci = bootstrap_derived(lambda x: _derive(d.kind, x[:, 0], x[:, 1]), [a.samples, b.samples])
                m = Measurement(float(_derive(d.kind, a.value, b.value)), ci,
                                reason=f"{d.kind} of {d.of} vs row {d.baseline_row}")
            meas.setdefault((r.group, r.key), {})[col] = m
    for r in t.rows:
        if r.delta is None:
            continue
        for c in t.columns:
            a, b = get(r.group, r.delta.of, c.key), get(r.group, r.delta.over, c.key)
            if a.value is None or b.value is None:
                m = Measurement(None, reason=f"{r.delta.kind} needs rows {r.delta.of} and {r.delta.over}: "
                                + (a.reason if a.value is None else b.reason))
            elif r.delta.kind == "relative_pct" and b.value == 0:
                m = Measurement(None, reason=f"relative change over {r.delta.over} = 0 is undefined")
            else:
                ci = None
                if a.samples and b.samples:
                    ci = bootstrap_derived(lambda x: _derive(r.delta.kind, x[:, 0], x[:, 1]), [a.samples, b.samples])
                m = Measurement(float(_derive(r.delta.kind, a.value, b.value)), ci,
                                reason=f"{r.delta.kind}: {r.delta.of} vs {r.delta.over}")
            meas.setdefault((r.group, r.key), {})[c.key] = m

    cells = []
    for r in t.rows:
        for c in t.columns:
            m = get(r.group, r.key, c.key)
            pub = _num(r.values.get(c.key))
            ci = list(m.ci95) if m.ci95 is not None and not any(np.isnan(m.ci95)) else None
            status = cell_status(pub, m.value, ci, tolerance)
            cells.append(Cell(
                table=t.id, group=r.group, row=r.key, column=c.key, published=pub, measured=m.value,
                delta=None if (pub is None or m.value is None) else round(m.value - pub, 6),
                ci95=ci, n=m.n, status=status,
                reason=m.reason if status == NOT_RUN or r.delta or c.key in avg_cols or c.key in delta_cols else "",
                derived=bool(r.delta or c.key in avg_cols or c.key in delta_cols),
                higher_is_better=hib.get(c.key, True)))
    return TableDiff(paper=paper, table=t.id, profile=profile, tolerance=tolerance, cells=cells,
                     row_status={f"{g}/{k}" if g else k: s for (g, k), s in row_status.items()})


# ----------------------------------------------------------------------------------------------
# Regression check (CI)


def check_regressions(report: dict[str, Any], baseline: dict[str, Any], tolerance: float) -> list[str]:
    """Cells of ``report`` that regressed beyond ``tolerance`` against ``baseline`` (report JSONs).

    A regression: a cell measured in the baseline that is not measured now (or is gone), or whose
    value moved in the worse direction (lower, unless the column is lower-is-better) by more
    than ``tolerance``.
    """
    def key(c: dict[str, Any]) -> tuple[str, str, str, str]:
        return (c["table"], c.get("group", ""), c["row"], c["column"])

    now = {key(c): c for c in report.get("cells", [])}
    problems = []
    for c in baseline.get("cells", []):
        k = key(c)
        name = f"{k[0]} {k[1] + '/' if k[1] else ''}{k[2]} [{k[3]}]"
        if c.get("measured") is None:
            continue
        cur = now.get(k)
        if cur is None:
            problems.append(f"{name}: in the baseline ({c['measured']:.2f}) but absent from the report")
            continue
        if cur.get("measured") is None:
            problems.append(f"{name}: measured {c['measured']:.2f} in the baseline, not run now "
                            f"({cur.get('reason') or cur.get('status')})")
            continue
        change = cur["measured"] - c["measured"]
        worse = -change if c.get("higher_is_better", True) else change
        if worse > tolerance:
            problems.append(f"{name}: {c['measured']:.2f} -> {cur['measured']:.2f} "
                            f"({change:+.2f}, tolerance {tolerance})")
    return problems


def cell_dicts(diff: TableDiff) -> list[dict[str, Any]]:
    return [asdict(c) for c in diff.cells]


__all__ = ["ABOVE", "AGREES", "BELOW", "Cell", "DEFAULT_TOLERANCE", "MISSING", "Measurement", "NOT_RUN",
           "STATUSES", "TableDiff", "bootstrap_derived", "bootstrap_mean", "cell_dicts", "cell_status",
           "check_regressions", "diff_table", "measure", "per_sample_values", "read_records"]
