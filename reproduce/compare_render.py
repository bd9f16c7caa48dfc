"""The comparison (reproduce.compare) as Markdown (tabulate), self-contained HTML (plots as base64
PNG, matplotlib) and JSON: ``compare.md``, ``compare.html``, ``compare.json``."""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Optional

from harness.run_dir import atomic_write_text
from reproduce.facts import decoding_text, version_text
from reproduce.report import _CSS, SMOKE_BANNER, _html_table, _png

TITLE = "Comparison across papers and runs"


def _fmt(v: Optional[float]) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def _short(student: str) -> str:
    return student.split("/")[-1] if not student.startswith("smoke:") else student


def _benchmarks(comp: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(c["benchmark"] for c in comp["cells"]))


def _groups_table(comp: dict[str, Any], bench: str) -> tuple[list[str], list[list[Any]]]:
    headers = ["group", "papers / runs", "student", "version / subset", "quantity", "decoding", "judge",
               "framework", "data", "cells", "notes"]
    body = []
    for g in comp["groups"]:
        if g["benchmark"] != bench:
            continue
        k = g["key"]
        ver = version_text(k)
        body.append([g["id"], ", ".join(g["papers"]) + ("" if g["sources"] == ["published"] else
                                                          f" ({', '.join(g['sources'])})"),
                     _short(k["student"]), ver, k["quantity"], decoding_text(k), k["judge"] or "not stated",
                     k["framework"] or "not stated", k["dataset"], len(g["cells"]), "; ".join(g["notes"])])
    return headers, body


def _cells_table(comp: dict[str, Any], bench: str) -> tuple[list[str], list[list[Any]]]:
    headers = ["group", "source", "paper", "table", "row", "column", "method", "teacher", "training data", "value",
               "95% CI"]
    body = []
    cells = sorted((c for c in comp["cells"] if c["benchmark"] == bench),
                   key=lambda c: (int(c["group_id"].split("#")[1]), c["source"], c["paper"], c["table"]))
    for c in cells:
        row = f"{c['group']}/{c['row_label']}" if c["group"] else c["row_label"]
        ci = f"[{_fmt(c['ci95'][0])}, {_fmt(c['ci95'][1])}]" if c.get("ci95") else ""
        body.append([c["group_id"], c["source"], c["paper"], c["table"], row, c["column_label"], c["method"] or "—",
                     c["teacher"] or "—", c["data"] or "—", _fmt(c["value"]), ci])
    return headers, body


def _describe(comp: dict[str, Any], gid: str) -> str:
    g = next(x for x in comp["groups"] if x["id"] == gid)
    return f"{gid} ({', '.join(g['papers'])}; {', '.join(g['sources'])}; {_short(g['key']['student'])})"


def _flagged(comp: dict[str, Any], bench: str) -> list[str]:
    return [f"{_describe(comp, p['a'])} vs {_describe(comp, p['b'])} [{p['why_flagged']}]: " + "; ".join(p["reasons"])
            for p in comp["pairs"] if p["benchmark"] == bench and p["flagged"]]


def _gains_table(comp: dict[str, Any], bench: str) -> tuple[list[str], list[list[Any]]]:
    headers = ["paper", "source", "student", "table", "row", "method", "group", "base", "value", "gain"]
    body = [[g["paper"], g["source"], _short(g["student"]), g["table"],
             f"{g['group']}/{g['row_label']}" if g["group"] else g["row_label"], g["method"], g["group_id"],
             _fmt(g["base_value"]), _fmt(g["value"]), f"{g['gain']:+.2f}"]
            for g in comp["gains"] if g["benchmark"] == bench]
    return headers, body


def _sources_table(comp: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = ["source", "what", "profile", "code revision", "torch", "transformers", "vllm", "vlmeval", "hardware"]
    body = []
    for s in comp["sources"]:
        if s["kind"] == "published":
            body.append([s["id"], f"published tables of {', '.join(s['papers'])} ({s['path']})", "published",
                         "", "", "", "", "", ""])
            continue
        prov = s.get("provenance") or {}
        pk = prov.get("packages", {})
        hw = prov.get("hardware", {})
        acc = ", ".join(hw.get("accelerators") or []) or f"{hw.get('cpus', '?')} CPUs"
        body.append([s["id"], f"{s['paper']} {s['table']} ({s['path']})", s["profile"],
                     prov.get("code_revision", "not recorded"), pk.get("torch") or "—", pk.get("transformers") or "—",
                     pk.get("vllm") or "—", pk.get("vlmeval") or "—", acc])
    return headers, body


def _provenance_lines(comp: dict[str, Any]) -> list[str]:
    lines = []
    for p in comp["provenance"]:
        if p["differences"]:
            lines.append(f"{p['a']} vs {p['b']}: different provenance: " + "; ".join(p["differences"]))
        else:
            lines.append(f"{p['a']} vs {p['b']}: same provenance")
    return lines


INTRO = ("Numbers sit in one *comparability group* when benchmark, version/subset, quantity, student (base "
         "model), decoding, k, judge, framework and data are all equal. A protocol field a paper does not "
         "state is never assumed equal to another paper's, so such groups are comparable within their paper "
         "only. Teacher and training data are what a comparison inside a group varies; they are listed per "
         "number. *Not comparable* lists the pairs a reader would be tempted to compare (same base model, or a "
         "run next to the row it reproduces) and says why they are not.")


def to_markdown(comp: dict[str, Any]) -> str:
    from tabulate import tabulate

    n = comp["counts"]
    parts = [f"# {TITLE}", ""]
    if comp["smoke"]:
        parts += [f"> **{SMOKE_BANNER}**", ""]
    parts += [f"Generated {comp['generated']}. Filters: " + ", ".join(
        f"{k} {','.join(v)}" for k, v in comp["filters"].items() if v) if any(comp["filters"].values())
        else f"Generated {comp['generated']}. No filters.", "",
        "Counts: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in n.items()), "", INTRO, "",
        "## Sources", "", tabulate(_sources_table(comp)[1], headers=_sources_table(comp)[0], tablefmt="github"), ""]
    if comp["provenance"]:
        parts += ["### Provenance of the runs", ""] + [f"- {x}" for x in _provenance_lines(comp)] + [""]
    for bench in _benchmarks(comp):
        parts += [f"## {bench}", "", "### Comparability groups", ""]
        h, b = _groups_table(comp, bench)
        parts += [tabulate(b, headers=h, tablefmt="github"), ""]
        flagged = _flagged(comp, bench)
        parts += ["### Not comparable", ""] + ([f"- {x}" for x in flagged] or ["- (no look-alike pairs)"]) + [""]
        h, b = _gains_table(comp, bench)
        if b:
            parts += ["### Gain over each paper's own base row", "", tabulate(b, headers=h, tablefmt="github"), ""]
        h, b = _cells_table(comp, bench)
        parts += ["### Every number", "", tabulate(b, headers=h, tablefmt="github"), ""]
    if comp["smoke"]:
        parts += [f"*{SMOKE_BANNER}*", ""]
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------
# Plots


def _label(student: str, n: int = 32) -> str:
    s = _short(student).replace("smoke:", "smoke ").replace(" (tiny stand-in for ", " for ").rstrip(")")
    s = s.replace("Qwen/", "")
    return s if len(s) <= n else s[: n - 1] + "…"


def _tight(fig: Any) -> None:
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()


def plot_values(comp: dict[str, Any], bench: str) -> Optional[str]:
    """All numbers of one benchmark (scores only), one column a comparability group."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in comp["groups"] if g["benchmark"] == bench and g["key"]["quantity"] == "score"]
    if not groups:
        return None
    cells = {c["id"]: c for c in comp["cells"]}
    papers = sorted({c["paper"] for c in comp["cells"]})
    colors = {p: f"C{i}" for i, p in enumerate(papers)}
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(groups) + 2), 4.8))
    for i, g in enumerate(groups):
        for cid in g["cells"]:
            c = cells[cid]
            if c["value"] is None:
                continue
            ax.plot(i, c["value"], marker="o" if c["source"] == "published" else "s", ls="none", ms=5, alpha=0.75,
                    color=colors[c["paper"]], mfc="none" if c["source"] != "published" else colors[c["paper"]])
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{g['id']} {_label(g['key']['student'], 24)}" for g in groups], rotation=60, fontsize=6,
                       ha="right")
    ax.set_ylabel("score")
    ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], marker="o", color=colors[p], ls="none", label=p) for p in papers]
    handles.append(plt.Line2D([], [], marker="s", color="grey", mfc="none", ls="none", label="measured run"))
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(f"{bench}: every number by comparability group" + (" — includes SMOKE runs" if comp["smoke"] else ""),
                 fontsize=9)
    _tight(fig)
    return _png(fig)


def plot_gains(comp: dict[str, Any], bench: str) -> Optional[str]:
    """Method-level view, one line a row: left its score (filled) against its paper's own base row
    (open), right the gain; so that e.g. VOLD at 3B and VGS at 2B sit in one plot with their bases."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gl = [g for g in comp["gains"] if g["benchmark"] == bench]
    if not gl:
        return None
    gl = sorted(gl, key=lambda g: (g["source"] != "published", g["paper"], g["student"], g["variant"], g["table"],
                                   g["row"]))
    papers = sorted({g["paper"] for g in gl})
    colors = {p: f"C{i}" for i, p in enumerate(sorted({c["paper"] for c in comp["cells"]}))}
    fig, (ax, axg) = plt.subplots(1, 2, sharey=True, figsize=(10, max(2.5, 0.17 * len(gl) + 1.4)),
                                  gridspec_kw={"width_ratios": [3, 2]})
    for i, g in enumerate(gl):
        col = colors[g["paper"]]
        filled = "o" if g["source"] == "published" else "s"
        ax.plot([g["base_value"], g["value"]], [i, i], color=col, lw=1.2, alpha=0.7)
        ax.plot(g["base_value"], i, marker="o", mfc="white", color=col, ms=4)
        ax.plot(g["value"], i, marker=filled, color=col, ms=4)
        axg.barh(i, g["gain"], color=col, alpha=0.8, height=0.7, hatch=None if g["source"] == "published" else "//")
        axg.annotate(f"{g['gain']:+.1f}", (g["gain"], i), xytext=(2 if g["gain"] >= 0 else -2, 0),
                     textcoords="offset points", fontsize=5, va="center", ha="left" if g["gain"] >= 0 else "right")
    ax.set_yticks(range(len(gl)))
    ax.set_yticklabels([f"{g['paper']} {_label(g['student'], 26)} {g['variant']} {g['table']} {g['row_label'][:26]}"
                        + ("" if g["source"] == "published" else f" [{g['source']}]") for g in gl], fontsize=5)
    ax.invert_yaxis()
    ax.set_xlabel("score (open: the paper's own base row; filled: the row)", fontsize=7)
    axg.set_xlabel("gain over the base row (points)", fontsize=7)
    axg.axvline(0, color="black", lw=0.8)
    for a in (ax, axg):
        a.grid(alpha=0.3, axis="x")
        a.tick_params(axis="x", labelsize=6)
    ax.legend(handles=[plt.Line2D([], [], marker="o", color=colors[p], ls="-", label=p) for p in papers], fontsize=6)
    fig.suptitle(f"{bench}: gain over each paper's own base row" + (" — includes SMOKE runs (hatched)"
                                                                    if comp["smoke"] else ""), fontsize=9)
    _tight(fig)
    return _png(fig)


def to_html(comp: dict[str, Any], plots: bool = True) -> str:
    n = comp["counts"]
    banner = f'<div class="banner">{html.escape(SMOKE_BANNER)}</div>' if comp["smoke"] else ""
    filters = ", ".join(f"{k} {','.join(v)}" for k, v in comp["filters"].items() if v) or "none"
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{TITLE}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{TITLE}</h1>", banner,
             f"<p>Generated {html.escape(comp['generated'])}. Filters: {html.escape(filters)}.</p>",
             "<p>Counts: " + html.escape(", ".join(f"{k.replace('_', ' ')} {v}" for k, v in n.items())) + "</p>",
             f"<p>{html.escape(INTRO)}</p>", "<h2>Sources</h2>", _html_table(*_sources_table(comp))]
    if comp["provenance"]:
        parts.append("<h3>Provenance of the runs</h3><ul>"
                     + "".join(f"<li>{html.escape(x)}</li>" for x in _provenance_lines(comp)) + "</ul>")
    for bench in _benchmarks(comp):
        parts += [f"<h2>{html.escape(bench)}</h2>", "<h3>Comparability groups</h3>", _html_table(*_groups_table(comp, bench))]
        flagged = _flagged(comp, bench)
        parts.append("<h3>Not comparable</h3><ul>" + ("".join(f"<li>{html.escape(x)}</li>" for x in flagged)
                                                      or "<li>(no look-alike pairs)</li>") + "</ul>")
        h, b = _gains_table(comp, bench)
        if b:
            parts += ["<h3>Gain over each paper's own base row</h3>", _html_table(h, b)]
            img = plot_gains(comp, bench) if plots else None
            if img:
                parts.append(f'<img alt="{html.escape(bench)} gains" src="data:image/png;base64,{img}">')
        img = plot_values(comp, bench) if plots else None
        if img:
            parts.append(f'<h3>Every number by group</h3><img alt="{html.escape(bench)} values" '
                         f'src="data:image/png;base64,{img}">')
        parts += ["<h3>Every number</h3>", _html_table(*_cells_table(comp, bench))]
    parts += [banner, "</body></html>"]
    return "\n".join(parts)


def write_comparison(comp: dict[str, Any], directory: Path, plots: bool = True) -> dict[str, Path]:
    """Write ``compare.md``, ``compare.html`` and ``compare.json`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {ext: directory / f"compare.{ext}" for ext in ("md", "html", "json")}
    atomic_write_text(paths["md"], to_markdown(comp))
    atomic_write_text(paths["html"], to_html(comp, plots=plots))
    atomic_write_text(paths["json"], json.dumps(comp, indent=1, default=str) + "\n")
    for p in paths.values():
        p.chmod(0o644)
    return paths


__all__ = ["plot_gains", "plot_values", "to_html", "to_markdown", "write_comparison"]
