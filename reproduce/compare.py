"""``reproduce compare``: every published number of the four papers and every measured run, side by
side per benchmark, grouped by what makes numbers comparable (reproduce.facts).

The comparison is a JSON-able dict::

    {"generated", "filters", "sources": [...], "counts": {...},
     "cells":  [{id, source, paper, table, group, row, column, value, benchmark, student, protocol,
                 key, group_id, ...}],            # every cell exactly once
     "groups": [{id, benchmark, key, cells: [ids], papers, sources, notes}],
     "pairs":  [{benchmark, a, b, reasons, flagged}],   # every two groups of one benchmark
     "gains":  [{cell, base, benchmark, paper, student, method, base_value, value, gain}],
     "provenance": [{a, b, differences}]}

A pair of score groups is *flagged* when a reader would be tempted to compare it: they share a
(paper, table, row) - a run next to the published row it reproduces - or the student (base model),
either across papers / runs or with the same benchmark version (e.g. Acc@1 vs Acc@16 of one row).
"""
from __future__ import annotations

import datetime as _dt
import functools
import itertools
import json
import re
from pathlib import Path
from typing import Any, Iterable, Optional

from reproduce.facts import (comparability_key, column_identity, incomparability, key_id, model_facts,
                             quantity)
from reproduce.published import PUBLISHED_DIR, Protocol, list_papers, load_published
from reproduce.recipes import PAPERS_DIR, load_recipe


class CompareError(ValueError):
    """A user mistake (unreadable report, unknown filter value); the message names the file/field."""


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else 0.0


@functools.lru_cache(maxsize=32)
def _load(paper: str, published_dir: Path, recipe_dir: Path, _stamp: tuple[float, float]) -> tuple[Any, Any]:
    try:
        recipe = load_recipe(paper, recipe_dir)
    except KeyError:
        recipe = None
    return load_published(paper, published_dir), recipe


def _paper(paper: str, published_dir: Path, recipe_dir: Path) -> tuple[Any, Any]:
    """(published tables, recipe or None) of ``paper``; parsed once per file version (YAML is slow)."""
    pd, rd = Path(published_dir).resolve(), Path(recipe_dir).resolve()
    return _load(paper, pd, rd, (_mtime(pd / f"{paper}.yaml"), _mtime(rd / f"{paper}.yaml")))


def _cell(source: str, paper: str, table: Any, row: Any, column: Any, value: Optional[float], facts: Any,
          protocol: Protocol, dataset: str, student: str, **extra: Any) -> dict[str, Any]:
    bench, variant = column_identity(table, column)
    q = quantity(table, row, column)
    key = comparability_key(benchmark=bench, variant=variant, quantity=q, student=student, protocol=protocol,
                            dataset=dataset, paper=paper)
    g = f"{row.group}/" if row.group else ""
    return {"id": f"{source}:{paper}/{table.id}/{g}{row.key}/{column.key}", "source": source, "paper": paper,
            "table": table.id, "group": row.group, "row": row.key, "row_label": row.label, "column": column.key,
            "column_label": column.label, "value": value, "ci95": None, "n": None,
            "derived": q != "score" or bench.startswith("avg("), "benchmark": bench, "variant": variant,
            "quantity": q, "student": student, "teacher": facts.teacher, "data": facts.data,
            "method": facts.method, "role": facts.role,
            "protocol": {f: getattr(protocol, f) for f in Protocol.FIELDS} | {"source": protocol.source},
            "dataset": dataset, "key": key, **extra}


def _num(v: Any) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def published_cells(published_dir: Path = PUBLISHED_DIR, recipe_dir: Path = PAPERS_DIR) -> list[dict[str, Any]]:
    """Every cell of every published results table (null cells included, value None)."""
    out = []
    for paper in list_papers(published_dir):
        pub, recipe = _paper(paper, published_dir, recipe_dir)
        for t in pub.results_tables():
            for r in t.rows:
                facts = model_facts(recipe, t.id, r)
                for c in t.columns:
                    out.append(_cell("published", paper, t, r, c, _num(r.values[c.key]), facts, t.protocol_of(r, c),
                                     "as published", facts.student, profile="published", smoke=False))
    return out


# ----------------------------------------------------------------------------------------------
# Measured runs


def is_report(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("cells"), list) and "paper" in obj and "table" in obj


def find_reports(paths: Iterable[Path | str]) -> list[tuple[Path, dict[str, Any]]]:
    """The reproduce report JSONs in ``paths`` (files, or directories searched recursively); other JSON
    files are skipped. Raises CompareError naming a file that is missing or not JSON."""
    found: list[tuple[Path, dict[str, Any]]] = []
    for p in map(Path, paths):
        if not p.exists():
            raise CompareError(f"{p}: no such file or directory")
        files = sorted(p.rglob("*.json")) if p.is_dir() else [p]
        for f in files:
            try:
                obj = json.loads(f.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise CompareError(f"{f}: not readable JSON ({e})") from e
            if is_report(obj):
                found.append((f, obj))
            elif not p.is_dir():
                raise CompareError(f"{f}: not a reproduce report JSON (needs 'paper', 'table' and 'cells')")
    return found


def _run_protocol(recipe: Any, table_id: str, row: Any, column_key: str, settings: dict[str, Any],
                  benchmark: str, split: Optional[str]) -> Protocol:
    mode, k, temp = "greedy", 1, 0.0
    if recipe is not None:
        try:
            rr, cr = recipe.table(table_id).row(row.key, row.group), recipe.table(table_id).column(column_key)
            mode, k, temp = rr.decoding(cr)
        except KeyError:
            pass
    judge = f"llm:{settings['judge_url']}" if settings.get("judge_url") else "rule"
    return Protocol(decoding=mode, temperature=temp if mode == "sample" else None, k=k, judge=judge,
                    framework=f"vlmrepro evals ({settings.get('engine', 'hf')})",
                    subset=f"evals:{benchmark}" + (f" {split}" if split else ""),
                    max_new_tokens=settings.get("max_new_tokens"),
                    source="the run's recipe (decoding) and evaluation settings")


def run_cells(path: Path, rep: dict[str, Any], source: str, published_dir: Path = PUBLISHED_DIR,
              recipe_dir: Path = PAPERS_DIR) -> list[dict[str, Any]]:
    """The measured cells of one report, with the facts of its paper's recipe; a smoke run's student is
    the tiny stand-in, its data the generated fixtures."""
    paper, tid = rep["paper"], rep["table"]
    try:
        pub, recipe = _paper(paper, published_dir, recipe_dir)
        table = pub.table(tid)
    except KeyError as e:
        raise CompareError(f"{path}: {e.args[0]}") from e
    settings = rep.get("eval_settings") or {}
    smoke = bool(rep.get("smoke"))
    dataset = (f"{settings.get('source', 'hub')} data" + (f", first {settings['limit']} samples" if settings.get("limit")
                                                          else "")) + (" (smoke fixtures)" if smoke else "")
    revisions = (rep.get("provenance") or {}).get("dataset_revisions", {})
    rcols = {c["key"]: c for c in rep.get("columns", [])}
    by_id = {(c.get("group", ""), c["row"], c["column"]): c for c in rep["cells"]}
    smoke_kind = getattr(recipe, "smoke_model", "?")
    out = []
    for r in table.rows:
        facts = model_facts(recipe, tid, r)
        student = f"smoke:{smoke_kind} (tiny stand-in for {facts.student})" if smoke else facts.student
        for c in table.columns:
            cell = by_id.get((r.group, r.key, c.key))
            if cell is None:
                continue
            bench = (rcols.get(c.key) or {}).get("benchmark") or c.benchmark or c.key
            m = re.search(r"split ([^)]+)\)", revisions.get(bench, ""))
            proto = _run_protocol(recipe, tid, r, c.key, settings, bench, m.group(1) if m else None)
            out.append(_cell(source, paper, table, r, c, cell.get("measured"), facts, proto, dataset, student,
                             profile=rep.get("profile", "?"), smoke=smoke, status=cell.get("status"),
                             reason=cell.get("reason", "")) | {"ci95": cell.get("ci95"), "n": cell.get("n")})
    return out


# ----------------------------------------------------------------------------------------------
# Filters, groups, pairs, gains


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def filter_cells(cells: list[dict[str, Any]], *, benchmarks: Optional[list[str]] = None,
                 students: Optional[list[str]] = None, papers: Optional[list[str]] = None,
                 methods: Optional[list[str]] = None) -> list[dict[str, Any]]:
    """Cells of the given benchmarks (benchmark or column key), students (substring of the base model,
    case and punctuation ignored), papers and methods (a method of the row's stage chain, its role, or
    its row key). None = no filter."""
    def keep(c: dict[str, Any]) -> bool:
        if benchmarks and c["benchmark"] not in benchmarks and c["column"] not in benchmarks:
            return False
        if students and not any(_norm(s) in _norm(c["student"]) for s in students):
            return False
        if papers and c["paper"] not in papers:
            return False
        if methods:
            names = {m.strip().lower() for m in re.split(r"->|:|,", c["method"] or "")} | {c["role"], c["row"]}
            if not any(m.lower() in names for m in methods):
                return False
        return True
    return [c for c in cells if keep(c)]


def check_filters(cells: list[dict[str, Any]], *, benchmarks: Optional[list[str]], papers: Optional[list[str]]) -> None:
    """A clear error for a benchmark or paper that no cell has (a typo)."""
    known_b = {c["benchmark"] for c in cells} | {c["column"] for c in cells}
    for b in benchmarks or []:
        if b not in known_b:
            raise CompareError(f"--benchmarks: unknown benchmark {b!r} (known: {sorted(k for k in known_b if '(' not in k)})")
    known_p = {c["paper"] for c in cells}
    for p in papers or []:
        if p not in known_p:
            raise CompareError(f"--papers: unknown paper {p!r} (known: {sorted(known_p)})")


def group_cells(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Comparability groups (equal keys), numbered per benchmark in order of first appearance."""
    groups: dict[tuple, dict[str, Any]] = {}
    for c in cells:
        k = key_id(c["key"])
        if k not in groups:
            n = sum(g["benchmark"] == c["benchmark"] for g in groups.values()) + 1
            groups[k] = {"id": f"{c['benchmark']}#{n}", "benchmark": c["benchmark"], "key": c["key"], "cells": [],
                         "papers": [], "sources": [], "notes": []}
        g = groups[k]
        c["group_id"] = g["id"]
        g["cells"].append(c["id"])
        for field, v in (("papers", c["paper"]), ("sources", c["source"])):
            if v not in g[field]:
                g[field].append(v)
    return list(groups.values())


def _rows(cells: list[dict[str, Any]], group_id: str) -> set[tuple[str, str, str, str, str]]:
    return {(c["paper"], c["table"], c["group"], c["row"], c["column"]) for c in cells if c["group_id"] == group_id}


def pair_groups(groups: list[dict[str, Any]], cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every two groups of one benchmark, with the reasons they are not comparable."""
    out = []
    by_bench: dict[str, list[dict[str, Any]]] = {}
    for g in groups:
        by_bench.setdefault(g["benchmark"], []).append(g)
    for bench, gs in by_bench.items():
        for a, b in itertools.combinations(gs, 2):
            ka, kb = a["key"], b["key"]
            scores = ka["quantity"] == kb["quantity"] == "score"
            same_student = ka["student"] == kb["student"] and ka["student"] != "unknown"
            same_version = (ka["variant"], ka["subset"]) == (kb["variant"], kb["subset"])
            elsewhere = a["papers"] != b["papers"] or a["sources"] != b["sources"]
            same_row = a["sources"] != b["sources"] and bool(_rows(cells, a["id"]) & _rows(cells, b["id"]))
            why = ("same row" if same_row else "same base model" if same_student and (elsewhere or same_version)
                   else "") if scores else ""
            out.append({"benchmark": bench, "a": a["id"], "b": b["id"], "reasons": incomparability(ka, kb),
                        "flagged": bool(why), "why_flagged": why})
    return out


def gains(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Gain of each trained / other-method score over its paper's own base row: the base-model row of
    the same paper and source with the same comparability key (same student, benchmark, protocol),
    preferring the same table and group."""
    bases: dict[tuple, list[dict[str, Any]]] = {}
    for c in cells:
        if c["role"] == "base" and c["value"] is not None and not c["derived"]:
            bases.setdefault((c["source"], c["paper"], key_id(c["key"])), []).append(c)
    out = []
    for c in cells:
        if c["role"] in ("base", "derived", "") or c["derived"] or c["value"] is None:
            continue
        cand = bases.get((c["source"], c["paper"], key_id(c["key"])), [])
        if not cand:
            continue
        base = sorted(cand, key=lambda b: (b["table"] != c["table"], b["group"] != c["group"]))[0]
        out.append({"cell": c["id"], "base": base["id"], "benchmark": c["benchmark"], "variant": c["variant"],
                    "paper": c["paper"], "source": c["source"], "table": c["table"], "group": c["group"],
                    "row": c["row"], "row_label": c["row_label"], "student": c["student"], "method": c["method"],
                    "group_id": c["group_id"], "base_value": base["value"], "value": c["value"],
                    "gain": round(c["value"] - base["value"], 4)})
    return out


def provenance_pairs(sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Provenance differences between every two run reports."""
    from reproduce.provenance import provenance_differences
    runs = [s for s in sources if s["kind"] == "run"]
    return [{"a": a["id"], "b": b["id"], "differences": provenance_differences(a.get("provenance"), b.get("provenance"))}
            for a, b in itertools.combinations(runs, 2)]


def _group_notes(groups: list[dict[str, Any]], prov: list[dict[str, Any]]) -> None:
    differs = {(p["a"], p["b"]) for p in prov if p["differences"]}
    for g in groups:
        runs = [s for s in g["sources"] if s != "published"]
        for a, b in itertools.combinations(runs, 2):
            if (a, b) in differs or (b, a) in differs:
                g["notes"].append(f"runs {a} and {b} have different provenance (see Provenance)")
        if g["key"]["scope"]:
            g["notes"].append(f"protocol not fully stated: comparable within {g['key']['scope']} only")


def build_comparison(run_paths: Iterable[Path | str] = (), *, benchmarks: Optional[list[str]] = None,
                     students: Optional[list[str]] = None, papers: Optional[list[str]] = None,
                     methods: Optional[list[str]] = None, include_published: bool = True,
                     published_dir: Path = PUBLISHED_DIR, recipe_dir: Path = PAPERS_DIR) -> dict[str, Any]:
    """The comparison of the published tables (unless ``include_published`` is False) and the run
    reports found in ``run_paths``, filtered; raises CompareError on unreadable input or unknown filters."""
    cells: list[dict[str, Any]] = published_cells(published_dir, recipe_dir) if include_published else []
    sources: list[dict[str, Any]] = []
    if include_published:
        sources.append({"id": "published", "kind": "published", "papers": list_papers(published_dir),
                        "path": str(published_dir)})
    for i, (path, rep) in enumerate(find_reports(run_paths), 1):
        sid = f"run{i}"
        sources.append({"id": sid, "kind": "run", "path": str(path), "paper": rep["paper"], "table": rep["table"],
                        "profile": rep.get("profile"), "smoke": bool(rep.get("smoke")),
                        "generated": rep.get("generated"), "provenance": rep.get("provenance")})
        cells += run_cells(path, rep, sid, published_dir, recipe_dir)
    if not cells:
        raise CompareError("nothing to compare: no published tables and no run reports")
    check_filters(cells, benchmarks=benchmarks, papers=papers)
    cells = filter_cells(cells, benchmarks=benchmarks, students=students, papers=papers, methods=methods)
    groups = group_cells(cells)
    pairs = pair_groups(groups, cells)
    prov = provenance_pairs(sources)
    _group_notes(groups, prov)
    gl = gains(cells)
    pub = [c for c in cells if c["source"] == "published"]
    return {
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "filters": {"benchmarks": benchmarks, "students": students, "papers": papers, "methods": methods},
        "smoke": any(s.get("smoke") for s in sources),
        "sources": sources,
        "counts": {"cells": len(cells), "published_cells": len(pub),
                   "published_numbers": sum(c["value"] is not None for c in pub),
                   "measured_cells": len(cells) - len(pub),
                   "measured_numbers": sum(c["value"] is not None for c in cells if c["source"] != "published"),
                   "benchmarks": len({c["benchmark"] for c in cells}), "groups": len(groups),
                   "cross_paper_groups": sum(len(g["papers"]) > 1 for g in groups),
                   "pairs": len(pairs), "flagged_pairs": sum(p["flagged"] for p in pairs), "gains": len(gl),
                   "runs_with_different_provenance": sum(bool(p["differences"]) for p in prov)},
        "cells": cells, "groups": groups, "pairs": pairs, "gains": gl, "provenance": prov,
    }


__all__ = ["CompareError", "build_comparison", "filter_cells", "find_reports", "gains", "group_cells",
           "is_report", "pair_groups", "published_cells", "run_cells"]
