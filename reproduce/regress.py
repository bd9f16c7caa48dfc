"""Regression check of a whole directory of reports against a baseline directory (CI).

``reproduce check REPORTS_DIR --baseline BASELINE_DIR [--tolerance FLOOR] [--junit FILE]``

Every report JSON under either directory (searched recursively; other JSON files are skipped) is
matched by (paper, table, profile). Per cell, measured now against measured in the baseline:

- tolerance = max(FLOOR, distance from the baseline value to the edge of its own 95% interval in
  the worse direction): a cell regresses when it leaves its baseline interval by more than that;
  a cell whose interval has no width (or that has none) gets the floor;
- ``regressed``: worse by more than the tolerance, measured in the baseline but not now, or gone
  (a whole report missing from REPORTS_DIR is one regression);
- ``improved``: better by more than the tolerance (not a failure); ``ok`` otherwise;
- ``not measured in baseline``: nothing to compare (skipped).

Exit 0 without regressions, 1 with, 2 on unreadable input (a file that is not JSON, no report in
the baseline, two reports of the same table in one directory).
"""
from __future__ import annotations

import json
import math
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from reproduce.compare import CompareError, find_reports

OK, REGRESSED, IMPROVED, SKIPPED = "ok", "regressed", "improved", "not measured in baseline"


@dataclass
class CellCheck:
    report: str
    cell: str
    status: str
    baseline: Optional[float] = None
    current: Optional[float] = None
    tolerance: Optional[float] = None
    basis: str = ""
    message: str = ""


def load_dir(directory: Path | str) -> dict[tuple[str, str, str], tuple[Path, dict[str, Any]]]:
    """The reports under ``directory`` by (paper, table, profile); CompareError on a duplicate."""
    out: dict[tuple[str, str, str], tuple[Path, dict[str, Any]]] = {}
    for path, rep in find_reports([directory]):
        key = (rep["paper"], rep["table"], str(rep.get("profile", "")))
        if key in out:
            raise CompareError(f"{path}: a second report of {key[0]} {key[1]} ({key[2]}) in {directory} "
                               f"(first: {out[key][0]})")
        out[key] = (path, rep)
    return out


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def cell_tolerance(cell: dict[str, Any], floor: float) -> tuple[float, str]:
    """(tolerance, basis) of one baseline cell: the distance to its interval's worse edge, at least ``floor``."""
    ci, v = cell.get("ci95"), cell.get("measured")
    if ci and len(ci) == 2 and all(_finite(x) for x in ci) and _finite(v):
        dist = (v - ci[0]) if cell.get("higher_is_better", True) else (ci[1] - v)
        if dist > floor:
            return float(dist), "interval"
    return float(floor), "floor"


def _name(c: dict[str, Any]) -> str:
    g = c.get("group") or ""
    return f"{g + '/' if g else ''}{c['row']} [{c['column']}]"


def check_report(report: Optional[dict[str, Any]], baseline: dict[str, Any], floor: float, name: str) -> list[CellCheck]:
    """Per-cell results of one report against its baseline (``report`` None: the report is missing)."""
    if report is None:
        return [CellCheck(name, "(report)", REGRESSED, message="in the baseline but missing from the reports")]
    now = {(c["table"], c.get("group", ""), c["row"], c["column"]): c for c in report.get("cells", [])}
    out = []
    for b in baseline.get("cells", []):
        k = (b["table"], b.get("group", ""), b["row"], b["column"])
        bv = b.get("measured")
        if not _finite(bv):
            out.append(CellCheck(name, _name(b), SKIPPED))
            continue
        tol, basis = cell_tolerance(b, floor)
        cur = now.get(k)
        if cur is None:
            out.append(CellCheck(name, _name(b), REGRESSED, bv, None, tol, basis, f"measured {bv:.2f} in the "
                                 "baseline, absent from the report"))
            continue
        cv = cur.get("measured")
        if not _finite(cv):
            out.append(CellCheck(name, _name(b), REGRESSED, bv, None, tol, basis, f"measured {bv:.2f} in the "
                                 f"baseline, not run now ({cur.get('reason') or cur.get('status')})"))
            continue
        change = cv - bv
        worse = -change if b.get("higher_is_better", True) else change
        status = REGRESSED if worse > tol + 1e-9 else IMPROVED if -worse > tol + 1e-9 else OK
        out.append(CellCheck(name, _name(b), status, bv, cv, tol, basis,
                             f"{bv:.2f} -> {cv:.2f} ({change:+.2f}, tolerance {tol:.2f} from the {basis})"))
    return out


def check_dirs(reports_dir: Path | str, baseline_dir: Path | str, floor: float) -> dict[str, list[CellCheck]]:
    """Per report (``paper/table (profile)``), the cell checks; CompareError on unreadable input."""
    base = load_dir(baseline_dir)
    if not base:
        raise CompareError(f"{baseline_dir}: no reproduce report JSON in the baseline directory")
    now = load_dir(reports_dir)
    results = {}
    for key, (_, brep) in sorted(base.items()):
        name = f"{key[0]}/{key[1]} ({key[2]})"
        results[name] = check_report(now.get(key, (None, None))[1], brep, floor, name)
    for key in sorted(now.keys() - base.keys()):
        results[f"{key[0]}/{key[1]} ({key[2]})"] = [CellCheck(f"{key[0]}/{key[1]} ({key[2]})", "(report)", SKIPPED,
                                                              message="new report: no baseline")]
    return results


def summary_rows(results: dict[str, list[CellCheck]]) -> tuple[list[str], list[list[Any]]]:
    headers = ["report", "cells", OK, IMPROVED, REGRESSED, SKIPPED, "tolerance from interval / floor"]
    body = []
    for name, checks in results.items():
        n = {s: sum(c.status == s for c in checks) for s in (OK, IMPROVED, REGRESSED, SKIPPED)}
        basis = f"{sum(c.basis == 'interval' for c in checks)} / {sum(c.basis == 'floor' for c in checks)}"
        body.append([name, len(checks), n[OK], n[IMPROVED], n[REGRESSED], n[SKIPPED], basis])
    return headers, body


def summary_markdown(results: dict[str, list[CellCheck]], floor: float) -> str:
    from tabulate import tabulate

    regressed = [c for checks in results.values() for c in checks if c.status == REGRESSED]
    improved = [c for checks in results.values() for c in checks if c.status == IMPROVED]
    total = sum(len(v) for v in results.values())
    parts = ["## reproduce check", "",
             f"{len(regressed)} regressed cell(s), {len(improved)} improved, of {total} in {len(results)} report(s) "
             f"(tolerance floor {floor} points).", "", tabulate(summary_rows(results)[1], headers=summary_rows(results)[0],
                                                                tablefmt="github"), ""]
    if regressed:
        parts += ["### Regressions", ""] + [f"- {c.report} {c.cell}: {c.message}" for c in regressed] + [""]
    if improved:
        parts += ["### Improvements (not failures)", ""] + [f"- {c.report} {c.cell}: {c.message}" for c in improved] + [""]
    return "\n".join(parts)


def junit_xml(results: dict[str, list[CellCheck]]) -> str:
    """JUnit XML: one testsuite a report, one testcase a cell; regressions are failures."""
    root = ET.Element("testsuites", name="reproduce check")
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    for name, checks in results.items():
        suite = ET.SubElement(root, "testsuite", name=name)
        n = {"tests": len(checks), "failures": sum(c.status == REGRESSED for c in checks),
             "skipped": sum(c.status == SKIPPED for c in checks)}
        for k, v in n.items():
            suite.set(k, str(v))
            totals[k] += v
        suite.set("errors", "0")
        for c in checks:
            case = ET.SubElement(suite, "testcase", classname=name.replace("/", ".").split(" ")[0], name=c.cell,
                                 time="0")
            if c.status == REGRESSED:
                ET.SubElement(case, "failure", message=c.message, type="regression").text = c.message
            elif c.status == SKIPPED:
                ET.SubElement(case, "skipped", message=c.message or SKIPPED)
            elif c.message:
                ET.SubElement(case, "system-out").text = f"{c.status}: {c.message}"
    for k, v in totals.items():
        root.set(k, str(v))
    root.set("errors", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def main_dirs(reports_dir: str, baseline_dir: str, floor: float, *, junit: Optional[str] = None,
              summary: Optional[str] = None) -> int:
    """``reproduce check DIR --baseline DIR``: print the summary, write JUnit / Markdown; exit code."""
    try:
        if not Path(reports_dir).is_dir() or not Path(baseline_dir).is_dir():
            raise CompareError(f"{reports_dir if not Path(reports_dir).is_dir() else baseline_dir}: not a directory "
                               "(give two directories, or two report files)")
        results = check_dirs(reports_dir, baseline_dir, floor)
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = summary_markdown(results, floor)
    print(text)
    if junit:
        Path(junit).parent.mkdir(parents=True, exist_ok=True)
        Path(junit).write_text(junit_xml(results))
        print(f"JUnit XML: {junit}")
    if summary:
        with open(summary, "a") as f:  # append: $GITHUB_STEP_SUMMARY may hold other steps' output
            f.write(text + "\n")
    return 1 if any(c.status == REGRESSED for checks in results.values() for c in checks) else 0


__all__ = ["CellCheck", "IMPROVED", "OK", "REGRESSED", "SKIPPED", "cell_tolerance", "check_dirs", "check_report",
           "junit_xml", "load_dir", "main_dirs", "summary_markdown"]
