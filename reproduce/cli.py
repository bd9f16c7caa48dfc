"""``reproduce``: list the papers' tables, run one, rebuild its report, check for regressions, compare.

    reproduce list
    reproduce TABLE --paper P [--profile smoke|paper] [--rows R1,R2] [--out DIR] [--dry-run]
                    [--tolerance X] [--report-dir DIR]
    reproduce report RUN_DIR [--tolerance X] [--report-dir DIR]
    reproduce check REPORT.json --baseline OTHER.json --tolerance X
    reproduce check REPORTS_DIR --baseline BASELINE_DIR [--tolerance FLOOR] [--junit FILE] [--summary FILE]
    reproduce compare [RUN_OR_REPORT ...] [--benchmarks B,..] [--students S,..] [--papers P,..]
                      [--methods M,..] [--no-published] [--out DIR]

``check`` exits 0 when no cell regressed, 1 when some did, 2 on unreadable input. ``compare``
exits 2 on unreadable input or an unknown benchmark / paper.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Optional

from harness.cli_errors import run_reporting_errors
from reproduce.diff import DEFAULT_TOLERANCE, check_regressions


def list_tables() -> str:
    """Every paper and table: rows, columns, and how many rows are runnable in each profile."""
    from tabulate import tabulate

    from reproduce.plan import RUNNABLE, build_plan
    from reproduce.published import list_papers, load_published
    from reproduce.recipes import list_recipes, load_recipe

    try:
        from methods.registry import METHODS
    except ImportError as e:  # the registry is another module's; say so rather than crash
        METHODS = None
        print(f"warning: methods.registry unavailable ({e}); runnability not shown", file=sys.stderr)
    lines = []
    for paper in sorted(set(list_papers()) | set(list_recipes())):
        pub = load_published(paper) if paper in list_papers() else None
        recipe = load_recipe(paper) if paper in list_recipes() else None
        lines.append(f"\n{paper}: {pub.title if pub else '(no published tables)'}")
        body = []
        for t in (pub.tables if pub else []):
            cols = ", ".join(c.key for c in t.columns)
            if t.kind != "results":
                body.append([t.id, t.kind, len(t.rows), cols, "-", "(hyper-parameters: recipe data)"])
                continue
            runnable = {}
            if recipe is not None and METHODS is not None and t.id in {x.id for x in recipe.tables}:
                for profile in ("smoke", "paper"):
                    plan = build_plan(recipe, [t.id], profile, METHODS)
                    rows = [r for r in plan.tables[t.id].rows if not r.derived]
                    runnable[profile] = f"{sum(r.status == RUNNABLE for r in rows)}/{len(rows)}"
                blocked = sorted({r.status for r in build_plan(recipe, [t.id], "smoke", METHODS).tables[t.id].rows
                                  if r.status not in (RUNNABLE, "derived")})
                what = f"smoke {runnable['smoke']}, paper {runnable['paper']}" + (
                    f"; smoke blocked: {'; '.join(blocked)}" if blocked else "")
            else:
                what = "no recipe" if recipe is None or t.id not in {x.id for x in recipe.tables} else "?"
            rows = ", ".join((r.group + "/" if r.group else "") + r.key for r in t.rows)
            body.append([t.id, t.kind, len(t.rows), cols, rows, what])
        lines.append(tabulate(body, headers=["table", "kind", "#rows", "columns", "rows", "runnable rows"],
                              tablefmt="simple", maxcolwidths=[None, None, None, 40, 50, 50]))
    return "\n".join(lines)


def _table_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reproduce", description="Reproduce one table of a paper and diff it "
                                "against the published numbers (other commands: list, report, check, compare).")
    p.add_argument("table", help="table id, e.g. table1")
    p.add_argument("--paper", required=True, help="vold, reopold, vgs or ptdpo")
    p.add_argument("--profile", default="smoke", choices=["smoke", "paper"])
    p.add_argument("--rows", default=None, help="comma-separated row keys (default: all)")
    p.add_argument("--out", default=None, help="run directory (default runs/<paper>/<table>-<profile>)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="agreement tolerance, points")
    p.add_argument("--report-dir", default=None, help="also write the three reports here")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed stage / evaluation")
    p.add_argument("--skip-preflight", action="store_true",
                   help="paper profile: start without checking models, data, GPUs, memory and disk first")
    g = p.add_argument_group("launch (each training stage as one torchrun job: reproduce/launch.py)")
    g.add_argument("--nproc-per-node", type=int, default=1, help="processes (GPUs) per node")
    g.add_argument("--nnodes", type=int, default=1, help="nodes (the same --out on a shared file system)")
    g.add_argument("--node-rank", type=int, default=0, help="this node's rank; node 0 evaluates and reports")
    g.add_argument("--master-addr", default="127.0.0.1", help="node 0's address (several nodes)")
    g.add_argument("--master-port", type=int, default=29500, help="node 0's rendezvous port (several nodes)")
    return p


def _copy_reports(paths: dict[str, Path], report_dir: Optional[str]) -> None:
    if report_dir:
        Path(report_dir).mkdir(parents=True, exist_ok=True)
        for p in paths.values():
            target = Path(report_dir) / p.name
            if not (target.exists() and target.samefile(p)):  # --report-dir may be the run's own report folder
                shutil.copyfile(p, target)
            print(f"  {target}")


def compare_main(argv: list[str]) -> int:
    """``reproduce compare``: write compare.md / .html / .json (see reproduce.compare)."""
    p = argparse.ArgumentParser(prog="reproduce compare", description="Published numbers of every paper and "
                                "measured runs side by side per benchmark, grouped by comparability")
    p.add_argument("runs", nargs="*", help="report JSONs or directories holding them (run dirs, report dirs)")
    p.add_argument("--benchmarks", default=None, help="comma-separated benchmark keys, e.g. mathvista,mathverse")
    p.add_argument("--students", default=None, help="comma-separated substrings of the base model, e.g. qwen2.5-vl-3b")
    p.add_argument("--papers", default=None, help="comma-separated papers (vold, reopold, vgs, ptdpo)")
    p.add_argument("--methods", default=None, help="comma-separated methods / roles / row keys (vold, grpo, base)")
    p.add_argument("--no-published", action="store_true", help="only the runs, not the published tables")
    p.add_argument("--no-plots", action="store_true", help="HTML without plots (faster)")
    p.add_argument("--out", default="compare", help="output directory (default ./compare)")
    a = p.parse_args(argv)
    from reproduce.compare import CompareError, build_comparison
    from reproduce.compare_render import write_comparison

    def split(v: Optional[str]) -> Optional[list[str]]:
        return [x.strip() for x in v.split(",") if x.strip()] if v else None
    try:
        comp = build_comparison(a.runs, benchmarks=split(a.benchmarks), students=split(a.students),
                                papers=split(a.papers), methods=split(a.methods), include_published=not a.no_published)
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths = write_comparison(comp, Path(a.out), plots=not a.no_plots)
    n = comp["counts"]
    print(f"{n['cells']} cells ({n['published_cells']} published, {n['measured_cells']} measured) in "
          f"{n['groups']} comparability groups over {n['benchmarks']} benchmarks; {n['flagged_pairs']} look-alike "
          f"pairs flagged not comparable; {n['gains']} gains over a base row")
    for path in paths.values():
        print(f"  {path}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """Exit 0 on success; 2 with one line on stderr for a user mistake (unknown paper / table / row,
    ``--out`` a file, unreadable input, hub unreachable: ``harness.cli_errors``); 1 from ``check``
    when a cell regressed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_reporting_errors("reproduce", lambda: _main(argv))


def _main(argv: list[str]) -> int:
    if argv and argv[0] == "list":
        print(list_tables())
        return 0
    if argv and argv[0] == "report":
        p = argparse.ArgumentParser(prog="reproduce report", description="Rebuild the reports of a run directory")
        p.add_argument("run_dir")
        p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
        p.add_argument("--report-dir", default=None)
        a = p.parse_args(argv[1:])
        from reproduce.report import regenerate
        try:
            written = regenerate(Path(a.run_dir), tolerance=a.tolerance)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for paths in written:
            for path in paths.values():
                print(path)
            _copy_reports(paths, a.report_dir)
        return 0
    if argv and argv[0] == "compare":
        return compare_main(argv[1:])
    if argv and argv[0] == "check":
        p = argparse.ArgumentParser(prog="reproduce check",
                                    description="Exit 1 when a cell regressed beyond tolerance against a baseline "
                                    "(one report, or every report of a directory)")
        p.add_argument("report", help="a report JSON, or a directory of reports (searched recursively)")
        p.add_argument("--baseline", required=True, help="the baseline report JSON / directory")
        p.add_argument("--tolerance", type=float, default=None,
                       help="points; with directories the floor of the per-cell tolerance "
                       f"(default {DEFAULT_TOLERANCE}); required for single reports")
        p.add_argument("--junit", default=None, help="directories: also write a JUnit-XML file here")
        p.add_argument("--summary", default=None, help="directories: also write the Markdown summary here")
        a = p.parse_args(argv[1:])
        if Path(a.report).is_dir() or Path(a.baseline).is_dir():
            from reproduce.regress import main_dirs
            return main_dirs(a.report, a.baseline, DEFAULT_TOLERANCE if a.tolerance is None else a.tolerance,
                             junit=a.junit, summary=a.summary)
        if a.tolerance is None:
            p.error("--tolerance is required when checking one report")
        try:
            report = json.loads(Path(a.report).read_text())
            baseline = json.loads(Path(a.baseline).read_text())
        except (OSError, json.JSONDecodeError) as e:
            print(f"reproduce: error: cannot read report: {e}", file=sys.stderr)
            return 2
        if not isinstance(report, dict) or not isinstance(baseline, dict) or "cells" not in report:
            print("error: not a reproduce report JSON (no 'cells')", file=sys.stderr)
            return 2
        problems = check_regressions(report, baseline, a.tolerance)
        for line in problems:
            print(f"REGRESSION {line}")
        print(f"{len(problems)} regressed cell(s) of {len(baseline.get('cells', []))} in the baseline "
              f"(tolerance {a.tolerance})")
        return 1 if problems else 0
    a = _table_parser().parse_args(argv)
    from reproduce import run_table
    from reproduce.launch import Launch
    from reproduce.preflight import PreflightError
    rows = [r.strip() for r in a.rows.split(",") if r.strip()] if a.rows else None
    launch = Launch(a.nproc_per_node, a.nnodes, a.node_rank, a.master_addr, a.master_port)
    try:
        result = run_table(a.paper, a.table, a.profile, a.out, rows=rows, dry_run=a.dry_run, tolerance=a.tolerance,
                           fail_fast=a.fail_fast, preflight=False if a.skip_preflight else None,
                           launch=launch if launch.distributed else None)
    except PreflightError as e:
        lines = str(e).splitlines()
        for line in lines:
            print(f"reproduce: pre-flight: {line}", file=sys.stderr)
        print(f"reproduce: error: {len(lines)} pre-flight problem(s); nothing was started "
              "(--skip-preflight to start anyway)", file=sys.stderr)
        return 2
    if a.dry_run:
        print(result["plan_text"])
        return 0
    if result["report"] is None:
        print(f"node {a.node_rank}: training stages done; node 0 evaluates and writes the reports")
        return 0
    print(result["markdown"])
    print("\nreports:")
    for path in result["paths"].values():
        print(f"  {path}")
    _copy_reports(result["paths"], a.report_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
