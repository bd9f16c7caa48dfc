"""Reports of a run directory: Markdown (tabulate), self-contained HTML (plots as base64 PNG), JSON.

Everything is rebuilt from the run directory (plan.json, state.json, stage metrics, evaluation
summaries and records), so ``reproduce report RUN_DIR`` regenerates it at any time. A smoke-profile
report says so in its title and in a banner in every format, and its JSON carries
``"profile": "smoke"`` and ``"smoke": true``, and the smoke models' version
(``harness.tiny.SMOKE_VERSION`` of the code that wrote the report) as ``"smoke_version"``.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
from pathlib import Path
from typing import Any, Optional

from harness.run_dir import atomic_write_text, git_revision
from harness.tiny import SMOKE_VERSION
from reproduce.diff import (ABOVE, AGREES, BELOW, DEFAULT_TOLERANCE, MISSING, NOT_RUN, Measurement,
                            TableDiff, cell_dicts, diff_table, measure)
from reproduce.plan import RUNNABLE, Plan, benchmark_available
from reproduce.runner import RunState, stage_metrics

SMOKE_BANNER = ("SMOKE PROFILE: tiny models of the papers' architectures on the real Qwen vocabulary "
                "(random, then a short warm start on easy-vqa answers, stopped at about chance accuracy), trained and evaluated offline on small real data "
                "(easy-vqa, champ) and generated tasks, a few dozen held-out items a benchmark. These numbers "
                "test the pipeline end to end and whether a smoke recipe learns anything at all; they say "
                "nothing about the paper's results.")
MARK = {AGREES: "=", ABOVE: "▲", BELOW: "▼", NOT_RUN: "·", MISSING: "?"}
CURVE_KEYS = ("reward_mean", "cos_std_vis", "cos_lang_vis", "cos_lang_vis_top30")
"""Learning-curve metrics always plotted when logged (the cosines: VGS's gradient-angle
diagnostics, §3.2 / Fig. 3); any ``val*`` metric is plotted too."""


def _fmt(v: Optional[float], digits: int = 2) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _published_table(paper: str, table_id: str, published_dir: Optional[Path] = None) -> Any:
    from reproduce.published import PUBLISHED_DIR, get_table
    return get_table(paper, table_id, published_dir or PUBLISHED_DIR)


def collect(plan: Plan, out: Path, table_id: str, state: Optional[RunState] = None,
            rows: Optional[list[str]] = None) -> tuple[dict, dict]:
    """Measurements ``{(group, row): {column: Measurement}}`` and the reason of each row without them."""
    out = Path(out)
    state = state or RunState.load(out)
    tp = plan.tables[table_id]
    measurements: dict[tuple[str, str], dict[str, Measurement]] = {}
    reasons: dict[tuple[str, str], str] = {}
    for r in tp.rows:
        if r.derived:
            reasons[(r.group, r.key)] = "derived row"
            continue
        model = plan.models[r.model]
        if model.status != RUNNABLE:
            reasons[(r.group, r.key)] = model.status
            continue
        unselected = rows is not None and r.key not in rows and f"{r.group}/{r.key}" not in rows
        failed = [s for d in model.stages if (s := state.stages.get(d, {})).get("status") in ("failed", "blocked")]
        cells: dict[str, Measurement] = {}
        for c in tp.columns:
            if c.derived:
                continue
            ev = plan.evals[r.evals[c.column]]
            st = state.evals.get(r.evals[c.column], {})
            m = measure(out / ev.dir / c.benchmark, c.metric)
            if m.value is None:
                if failed:
                    m.reason = f"training failed: {failed[0].get('error', '')}"
                elif st.get("status") in ("failed", "blocked"):
                    m.reason = f"evaluation {st['status']}: {st.get('error', '')}"
                elif unselected:
                    m.reason = "not selected (--rows)"
                elif not benchmark_available(c.benchmark):
                    m.reason = f"not implemented (benchmark {c.benchmark!r} is not in evals)"
            cells[c.column] = m
        measurements[(r.group, r.key)] = cells
        if failed:
            reasons[(r.group, r.key)] = f"training failed: {failed[0].get('error', '')}"
        elif all(m.value is None for m in cells.values()):
            reasons[(r.group, r.key)] = next((m.reason for m in cells.values() if m.reason), "not run")
        else:
            reasons[(r.group, r.key)] = "run"
    return measurements, reasons


def _row_model_label(plan: Plan, row: Any) -> Optional[str]:
    """What a row evaluates: the row's own label (plans written before rows carried one fall back to
    the model's, which a model shared by several rows takes from the first of them)."""
    if row is None or not row.model:
        return None
    return row.label or plan.models[row.model].label


def build_report(out: Path, table_id: str, *, tolerance: float = DEFAULT_TOLERANCE,
                 rows: Optional[list[str]] = None, published_dir: Optional[Path] = None) -> dict[str, Any]:
    """The report of ``table_id`` in run directory ``out``, as the JSON-able dict written to disk."""
    out = Path(out)
    plan = Plan.load(out)
    state = RunState.load(out)
    table = _published_table(plan.paper, table_id, published_dir)
    measurements, reasons = collect(plan, out, table_id, state, rows)
    tp = plan.tables[table_id]
    diff: TableDiff = diff_table(table, measurements, reasons, paper=plan.paper, profile=plan.profile,
                                 tolerance=tolerance,
                                 higher_is_better={c.column: c.higher_is_better for c in tp.columns})
    prow = {(r.group, r.key): r for r in tp.rows}
    stage_dirs = plan.stages_for(table_id)
    smoke = plan.profile == "smoke"
    return {
        "paper": plan.paper, "table": table_id, "caption": table.caption, "profile": plan.profile,
        "smoke": smoke, "label": SMOKE_BANNER if smoke else "paper profile: the published recipe",
        "smoke_version": SMOKE_VERSION if smoke else None,
        "tolerance": tolerance, "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_rev": git_revision(), "run_dir": str(out), "eval_settings": plan.eval_settings,
        "columns": [{"key": c.key, "label": c.label, "benchmark": c.benchmark or c.key,
                     "metric": (next((p.metric for p in tp.columns if p.column == c.key), None))}
                    for c in table.columns],
        "rows": [{"group": r.group, "key": r.key, "label": r.label,
                  "model": _row_model_label(plan, prow.get((r.group, r.key))),
                  "status": reasons.get((r.group, r.key), "derived row" if r.delta else "not run")}
                 for r in table.rows],
        "counts": diff.counts(),
        "cells": cell_dicts(diff),
        "stages": [{"id": s.id, "dir": s.dir, "method": s.method, "plan_status": s.status,
                    **state.stages.get(s.dir, {}), "compute": s.compute, "source": s.source}
                   for s in stage_dirs],
        "curves": stage_metrics(plan, out, [s.dir for s in stage_dirs]),
        "constant_baseline": constant_baselines(plan, table_id),
        "provenance": _provenance(plan, out, table_id, [s.dir for s in stage_dirs], published_dir),
        "scaling": scaling_data(plan, out, tp.scaling) if tp.scaling else None,
        "memory": memory_section(tp.memory) if tp.memory else None,
    }


def memory_section(name: str) -> dict[str, Any]:
    """The memory accounting ``name`` (``reproduce.recipes.MEMORY_SECTIONS``) as a report section."""
    import importlib

    from reproduce.recipes import MEMORY_SECTIONS

    return importlib.import_module(MEMORY_SECTIONS[name]).report_section()


def scaling_data(plan: Plan, out: Path, sc: dict[str, Any]) -> dict[str, Any]:
    """The planned test-time scaling curves (``TablePlan.scaling``) measured from the sampled
    evaluations' records: per row and benchmark, Pass@k / Avg@k / Maj@k (percent) for k = 1..k
    (``evals.scaling.scaling_curve``), or the reason there is none."""
    from evals.runner import read_records
    from evals.scaling import scaling_curve

    curves = []
    for r in sc["rows"]:
        ev = plan.evals[r["eval"]]
        for b in sc["benchmarks"]:
            entry = {"group": r["group"], "key": r["key"], "label": r["label"], "benchmark": b}
            records = read_records(Path(out) / ev.dir / b / "records.jsonl")
            if not records:
                entry["status"] = r["status"] if r["status"] != RUNNABLE else "not run"
            else:
                cur = scaling_curve(records)
                keep = sum(k <= sc["k"] for k in cur["k"])  # k = 1..min(draws, planned k)
                entry.update(status="run", **{m: (v[:keep] if isinstance(v, list) else v) for m, v in cur.items()})
            curves.append(entry)
    return {**{k: v for k, v in sc.items() if k != "rows"}, "curves": curves}


def _scaling_ks(n: int) -> list[int]:
    """The k shown in the scaling tables: powers of two up to n, and n."""
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= n]
    return ks + ([n] if n not in ks else [])


def scaling_tables(rep: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(benchmark, headers, body) per benchmark of the report's scaling curves: one line per row
    and metric, one column per k."""
    sc = rep.get("scaling")
    if not sc:
        return []
    ks = _scaling_ks(sc["k"])
    out = []
    for b in sc["benchmarks"]:
        body = []
        for c in (c for c in sc["curves"] if c["benchmark"] == b):
            name = f"{c['group']}/{c['key']}" if c["group"] else c["key"]
            for m in sc["metrics"]:
                if c["status"] != "run":
                    body.append([name, f"{m.capitalize()}@k"] + ["—"] * len(ks) + [c["status"]])
                    continue
                vals = dict(zip(c["k"], c[m]))
                body.append([name, f"{m.capitalize()}@k"] + [_fmt(vals.get(k)) for k in ks]
                            + [f"n={c['n_items']}, {c['n_draws']} draws"])
        out.append((b, ["row", "metric"] + [f"k={k}" for k in ks] + ["items"], body))
    return out


def plot_scaling(rep: dict[str, Any]) -> Optional[str]:
    """Pass@k / Avg@k / Maj@k against k, one panel per metric and benchmark, one line per row
    (REOPOLD Figure 1(b) / Figure 13)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sc = rep.get("scaling")
    if not sc or not any(c["status"] == "run" for c in sc["curves"]):
        return None
    metrics, benches = sc["metrics"], sc["benchmarks"]
    fig, axes = plt.subplots(len(metrics), len(benches), figsize=(4.2 * len(benches), 3.0 * len(metrics)),
                             squeeze=False)
    for i, m in enumerate(metrics):
        for j, b in enumerate(benches):
            ax = axes[i][j]
            values: list[float] = []
            for c in sc["curves"]:
                if c["benchmark"] == b and c["status"] == "run":
                    name = f"{c['group']}/{c['key']}" if c["group"] else c["key"]
                    ax.plot(c["k"], c[m], marker="o", ms=3, label=name)
                    values += c[m]
            ax.set_xscale("log", base=2)
            ks = _scaling_ks(sc["k"])
            ax.set_xticks(ks)
            ax.set_xticklabels([str(k) for k in ks])
            if values:
                pad = max(2.0, 0.1 * (max(values) - min(values)))
                ax.set_ylim(max(0.0, min(values) - pad), min(100.0, max(values) + pad))
            ax.set_title(f"{b}: {m.capitalize()}@k", fontsize=9)
            ax.set_xlabel("k (samples per item)")
            ax.set_ylabel("%")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
    fig.suptitle(f"{rep['paper']} {rep['table']}: test-time scaling ({sc['label']})"
                 + (" — SMOKE PROFILE" if rep["smoke"] else ""), fontsize=10)
    fig.tight_layout()
    return _png(fig)


def _scaling_intro(sc: dict[str, Any]) -> str:
    return (f"{'/'.join(m.capitalize() + '@k' for m in sc['metrics'])} against k ({sc['label']}; sampled at "
            f"T={sc['temperature']:g}), as in {sc['source'] or 'the paper'}. Pass@k: unbiased estimator "
            f"(Chen et al. 2021) from all draws; Avg@k: mean accuracy of the first k draws; Maj@k: majority "
            f"vote over the first k draws' extracted answers (ties to the answer drawn first)."
            + (f" {sc['note']}" if sc.get("note") else ""))


def _provenance(plan: Plan, out: Path, table_id: str, stage_dirs: list[str],
                published_dir: Optional[Path]) -> dict[str, Any]:
    """reproduce.provenance.collect for one table: its stages, its evaluations, its recipe and table."""
    from reproduce.provenance import collect as collect_provenance
    from reproduce.published import PUBLISHED_DIR
    from reproduce.recipes import PAPERS_DIR

    evals = sorted({plan.evals[e].dir for r in plan.tables[table_id].rows for e in r.evals.values()
                    if e in plan.evals})
    files = {"recipe": PAPERS_DIR / f"{plan.paper}.yaml",
             "published": Path(published_dir or PUBLISHED_DIR) / f"{plan.paper}.yaml"}
    return collect_provenance(out, stage_dirs=stage_dirs, eval_dirs=evals, files=files,
                              eval_settings=plan.eval_settings)


def provenance_lines(rep: dict[str, Any]) -> list[str]:
    """One line a provenance section (code, packages, hardware, configs, datasets) for the reports."""
    prov = rep.get("provenance")
    if not prov:
        return ["(no provenance recorded)"]
    pk = ", ".join(f"{k} {v or 'not installed'}" for k, v in prov["packages"].items())
    hw = prov["hardware"]
    trained = prov.get("training_revisions") or {}
    return [f"code revision (this report): {prov['code_revision']}",
            "stages trained at: " + (", ".join(f"{k} {v}" for k, v in trained.items()) or "no stage trained"),
            f"packages: {pk}",
            f"hardware: {hw.get('platform')}, {hw.get('cpus')} CPUs, accelerators: "
            f"{', '.join(hw.get('accelerators') or []) or 'none'}",
            "config hashes: " + ", ".join(f"{k} {v}" for k, v in prov["config_hashes"].items()),
            "dataset revisions: " + (", ".join(f"{k} {v}" for k, v in prov["dataset_revisions"].items()) or "none")]


# ----------------------------------------------------------------------------------------------
# Markdown


def _title(rep: dict[str, Any]) -> str:
    return f"{rep['paper'].upper()} {rep['table']}: reproduction report ({rep['profile']} profile)"


def _cell_text(c: dict[str, Any]) -> str:
    if c["measured"] is None:
        return f"· / {_fmt(c['published'])}"
    ci = f" [{_fmt(c['ci95'][0], 1)}, {_fmt(c['ci95'][1], 1)}]" if c["ci95"] else ""
    n = f" n={c['n']}" if c.get("n") is not None else ""
    return f"{_fmt(c['measured'])}{ci}{n} / {_fmt(c['published'])} {MARK[c['status']]}"


def constant_baselines(plan: Plan, table_id: str) -> dict[str, dict[str, Any]]:
    """Column -> the constant-answer baseline (``evals.baseline.constant_answer_baseline``) on the
    items the table's smoke evaluation used: what one fixed answer to every item scores, the bar a
    trained row must clear to have learned more than the output format. Smoke profile only (the
    items are cheap to regenerate there)."""
    from evals.baseline import constant_answer_baseline
    from evals.benchmarks import get_benchmark

    settings = plan.eval_settings
    if plan.profile != "smoke" or settings.get("source") != "smoke":
        return {}
    out: dict[str, dict[str, Any]] = {}
    for c in plan.tables[table_id].columns:
        if c.derived or not benchmark_available(c.benchmark):
            continue
        bench = get_benchmark(c.benchmark)
        samples = bench.load("smoke", settings.get("limit"), smoke_n=settings.get("smoke_n", 2))
        res = constant_answer_baseline(bench, samples, metric=c.metric, max_constants=12)
        out[c.column] = {k: res[k] for k in ("constant", "value", "n", "metric")}
    return out


def _row_name(r: dict[str, Any]) -> str:
    return f"{r['group']}/{r['label']}" if r["group"] else r["label"]


def _grid(rep: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    cells = {(c["group"], c["row"], c["column"]): c for c in rep["cells"]}
    headers = ["row"] + [c["label"] for c in rep["columns"]]
    body = [[_row_name(r)] + [_cell_text(cells[(r["group"], r["key"], c["key"])]) for c in rep["columns"]]
            for r in rep["rows"]]
    return headers, body


def _long(rep: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    labels = {c["key"]: c["label"] for c in rep["columns"]}
    headers = ["row", "column", "published", "measured", "delta", "95% CI", "n", "status", "note"]
    body = []
    for c in rep["cells"]:
        body.append([f"{c['group']}/{c['row']}" if c["group"] else c["row"], labels[c["column"]],
                     _fmt(c["published"]), _fmt(c["measured"]),
                     "—" if c["delta"] is None else f"{c['delta']:+.2f}",
                     f"[{_fmt(c['ci95'][0])}, {_fmt(c['ci95'][1])}]" if c["ci95"] else "—",
                     c["n"] if c["n"] is not None else "—", c["status"], c["reason"]])
    return headers, body


def _rows_table(rep: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    return ["row", "model", "status"], [[_row_name(r), r["model"] or "—", r["status"]] for r in rep["rows"]]


def _stages_table(rep: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    body = [[s["id"], s["method"], s.get("status") or s["plan_status"],
             s.get("final") or s.get("error") or "", s["compute"] or "not stated"] for s in rep["stages"]]
    return ["stage", "method", "status", "output / error", "paper's compute"], body


def to_markdown(rep: dict[str, Any]) -> str:
    from tabulate import tabulate

    parts = [f"# {_title(rep)}", ""]
    if rep["smoke"]:
        parts += [f"> **{SMOKE_BANNER}** (smoke models {rep.get('smoke_version') or '?'})", ""]
    parts += [f"*{rep['caption']}*", "",
              f"Generated {rep['generated']} from `{rep['run_dir']}` (code {rep['git_rev']}); "
              f"evaluation: {json.dumps(rep['eval_settings'], sort_keys=True)}; tolerance ±{rep['tolerance']} points.",
              "", "Counts: " + ", ".join(f"{k}: {v}" for k, v in rep["counts"].items()), "",
              "## Measured vs published", "",
              "Each cell: measured [95% bootstrap CI] / published, then the status: "
              "`=` agrees, `▲` above, `▼` below, `·` not run, `?` missing in paper.", ""]
    parts += [tabulate(_grid(rep)[1], headers=_grid(rep)[0], tablefmt="github"), ""]
    if rep.get("constant_baseline"):
        base = rep["constant_baseline"]
        parts += ["Constant-answer baseline (the best single answer given to every item, scored by the "
                  "benchmark's own rules: a row that does not beat it has learned at most the format):", "",
                  tabulate([["constant answer"] + [
                      f"{_fmt(base[c['key']]['value'])} n={base[c['key']]['n']} (`{base[c['key']]['constant']}`)"
                      if c["key"] in base else "—" for c in rep["columns"]]],
                      headers=["row"] + [c["label"] for c in rep["columns"]], tablefmt="github"), ""]
    if rep.get("memory"):
        mem = rep["memory"]
        parts += [f"## {mem['title']}", "", mem["note"], "",
                  tabulate(mem["rows"], headers=mem["headers"], tablefmt="github"), ""]
    if rep.get("scaling"):
        sc = rep["scaling"]
        parts += [f"## Test-time scaling ({sc['label']})", "", _scaling_intro(sc), ""]
        for bench, h, b in scaling_tables(rep):
            parts += [f"### {bench}", "", tabulate(b, headers=h, tablefmt="github"), ""]
    parts += ["## Rows", "", tabulate(_rows_table(rep)[1], headers=_rows_table(rep)[0], tablefmt="github"), ""]
    if rep["stages"]:
        h, b = _stages_table(rep)
        parts += ["## Training stages", "", tabulate(b, headers=h, tablefmt="github"), ""]
    h, b = _long(rep)
    parts += ["## Every cell", "", tabulate(b, headers=h, tablefmt="github"), ""]
    parts += ["## Provenance", ""] + [f"- {line}" for line in provenance_lines(rep)] + [""]
    if rep["smoke"]:
        parts += [f"*{SMOKE_BANNER}*", ""]
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------
# Plots and HTML


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plot_columns(rep: dict[str, Any]) -> Optional[str]:
    """Per column: measured (with 95% CI bars) and published value of every row."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = rep["columns"]
    if not cols:
        return None
    cells = {(c["group"], c["row"], c["column"]): c for c in rep["cells"]}
    ncol = min(4, len(cols))
    nrow = math.ceil(len(cols) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 3.2 * nrow), squeeze=False)
    names = [_row_name(r) for r in rep["rows"]]
    for ax, col in zip(axes.flat, cols):
        for i, r in enumerate(rep["rows"]):
            c = cells[(r["group"], r["key"], col["key"])]
            if c["published"] is not None:
                ax.plot(i, c["published"], marker="x", color="black", ms=8, ls="none",
                        label="published" if i == 0 else None)
            if c["measured"] is not None:
                err = None
                if c["ci95"]:
                    err = [[max(0.0, c["measured"] - c["ci95"][0])], [max(0.0, c["ci95"][1] - c["measured"])]]
                ax.errorbar(i, c["measured"], yerr=err, fmt="o", color="tab:blue", capsize=3,
                            label="measured (95% CI)" if i == 0 else None)
            else:
                ax.annotate("not run", (i, 0), fontsize=6, rotation=90, ha="center", va="bottom", color="grey")
        ax.set_title(col["label"], fontsize=9)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=6)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(cols):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], marker="x", color="black", ls="none", label="published"),
               plt.Line2D([], [], marker="o", color="tab:blue", ls="none", label="measured (95% CI)")]
    fig.legend(handles=handles, loc="upper right", fontsize=8)
    title = f"{rep['paper']} {rep['table']}: measured vs published"
    fig.suptitle(title + (" — SMOKE PROFILE" if rep["smoke"] else ""), fontsize=10)
    fig.tight_layout()
    return _png(fig)


def curve_keys(curves: dict[str, list[dict[str, Any]]]) -> list[str]:
    keys: list[str] = []
    for recs in curves.values():
        for rec in recs:
            for k, v in rec.items():
                if (k in CURVE_KEYS or k.startswith("val")) and isinstance(v, (int, float)) and k not in keys:
                    keys.append(k)
    return keys


def plot_curves(rep: dict[str, Any]) -> Optional[str]:
    """Learning curves of the run's training stages (training reward, validation accuracy ...),
    one panel a metric, one line a stage: the counterpart of VOLD's Figure 3."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = rep.get("curves") or {}
    keys = curve_keys(curves)
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    names = {s["dir"]: s["id"] for s in rep["stages"]}
    for ax, key in zip(axes.flat, keys):
        for d, recs in curves.items():
            pts = [(r["step"], r[key]) for r in recs if isinstance(r.get(key), (int, float)) and "step" in r]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=names.get(d, d))
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{rep['paper']} {rep['table']}: learning curves" + (" — SMOKE PROFILE" if rep["smoke"] else ""),
                 fontsize=10)
    fig.tight_layout()
    return _png(fig)


def _html_table(headers: list[str], body: list[list[Any]], classes: Optional[list[list[str]]] = None) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    rows = []
    for i, r in enumerate(body):
        tds = []
        for j, v in enumerate(r):
            cls = f' class="{classes[i][j]}"' if classes and classes[i][j] else ""
            tds.append(f"<td{cls}>{html.escape(str(v))}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px}
th{background:#f3f3f3}.agrees{background:#dff0d8}.above{background:#d9edf7}.below{background:#f2dede}
.not_run{background:#eee;color:#777}.missing_in_paper{background:#fcf8e3}
.banner{background:#fff3cd;border:2px solid #e0a800;padding:.8em;font-weight:bold;margin:1em 0}
img{max-width:100%}"""


def to_html(rep: dict[str, Any]) -> str:
    cells = {(c["group"], c["row"], c["column"]): c for c in rep["cells"]}
    gh, gb = _grid(rep)
    gcls = [[""] + [cells[(r["group"], r["key"], c["key"])]["status"].replace(" ", "_") for c in rep["columns"]]
            for r in rep["rows"]]
    lh, lb = _long(rep)
    lcls = [["" for _ in lh[:-2]] + [c["status"].replace(" ", "_"), ""] for c in rep["cells"]]
    banner = f'<div class="banner">{html.escape(SMOKE_BANNER)}</div>' if rep["smoke"] else ""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(_title(rep))}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(_title(rep))}</h1>", banner,
             f"<p><em>{html.escape(rep['caption'])}</em></p>",
             f"<p>Generated {html.escape(rep['generated'])} from <code>{html.escape(rep['run_dir'])}</code> "
             f"(code {html.escape(rep['git_rev'])}); tolerance ±{rep['tolerance']} points. Counts: "
             + html.escape(", ".join(f"{k}: {v}" for k, v in rep["counts"].items())) + "</p>",
             "<h2>Measured vs published</h2><p>Each cell: measured [95% bootstrap CI] / published, status "
             "mark (= agrees, ▲ above, ▼ below, · not run, ? missing in paper).</p>",
             _html_table(gh, gb, gcls)]
    if rep.get("memory"):
        mem = rep["memory"]
        parts += [f"<h2>{html.escape(mem['title'])}</h2><p>{html.escape(mem['note'])}</p>",
                  _html_table(mem["headers"], mem["rows"])]
    img = plot_columns(rep)
    if img:
        parts.append(f'<h2>Per column</h2><img alt="measured vs published" src="data:image/png;base64,{img}">')
    curves = plot_curves(rep)
    parts.append("<h2>Learning curves</h2>")
    parts.append(f'<img alt="learning curves" src="data:image/png;base64,{curves}">' if curves
                 else "<p>No training metrics in this run (no stage was trained).</p>")
    if rep.get("scaling"):
        sc = rep["scaling"]
        parts.append(f"<h2>Test-time scaling ({html.escape(sc['label'])})</h2><p>{html.escape(_scaling_intro(sc))}</p>")
        img = plot_scaling(rep)
        parts.append(f'<img alt="test-time scaling" src="data:image/png;base64,{img}">' if img
                     else "<p>No sampled evaluation of the scaling rows has run.</p>")
        for bench, h, b in scaling_tables(rep):
            parts += [f"<h3>{html.escape(bench)}</h3>", _html_table(h, b)]
    parts += ["<h2>Rows</h2>", _html_table(*_rows_table(rep))]
    if rep["stages"]:
        parts += ["<h2>Training stages</h2>", _html_table(*_stages_table(rep))]
    parts += ["<h2>Every cell</h2>", _html_table(lh, lb, lcls), "<h2>Provenance</h2><ul>"
              + "".join(f"<li>{html.escape(line)}</li>" for line in provenance_lines(rep)) + "</ul>",
              banner, "</body></html>"]
    return "\n".join(parts)


def write_reports(rep: dict[str, Any], directory: Path) -> dict[str, Path]:
    """Write ``<table>.md``, ``<table>.html`` and ``<table>.json`` into ``directory``."""
    directory = Path(directory)
    paths = {ext: directory / f"{rep['table']}.{ext}" for ext in ("md", "html", "json")}
    atomic_write_text(paths["md"], to_markdown(rep))
    atomic_write_text(paths["html"], to_html(rep))
    atomic_write_text(paths["json"], json.dumps(rep, indent=1, default=float) + "\n")
    for p in paths.values():
        p.chmod(0o644)  # atomic_write_text's temporary file is private; reports are for sharing
    return paths


def regenerate(out: Path, *, tolerance: float = DEFAULT_TOLERANCE, tables: Optional[list[str]] = None,
               published_dir: Optional[Path] = None) -> list[dict[str, Path]]:
    """``reproduce report RUN_DIR``: rebuild the reports of every table planned in ``out``."""
    plan = Plan.load(out)
    written = []
    for tid in tables or list(plan.tables):
        rep = build_report(out, tid, tolerance=tolerance, published_dir=published_dir)
        written.append(write_reports(rep, Path(out) / "report"))
    return written


__all__ = ["SMOKE_BANNER", "build_report", "collect", "memory_section", "plot_columns", "plot_curves", "plot_scaling",
           "scaling_data", "scaling_tables", "provenance_lines", "regenerate", "to_html",
           "to_markdown", "write_reports"]
