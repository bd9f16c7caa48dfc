"""What makes two numbers comparable: the facts of one cell and its comparability key.

A cell's facts come from the transcribed table (benchmark, variant, the evaluation ``protocol`` of
the table / column / row, see :class:`reproduce.published.Protocol`) and from the paper's recipe
(student = the hub checkpoint a row's model starts from, teacher, training data, method).

Two cells are *comparable* when their keys (:data:`KEY_FIELDS`) are equal: same benchmark, variant
and subset, same quantity (a score, or a printed difference), same student, same decoding, k,
judge, framework and data. A field a paper does not state is never assumed equal to another
paper's: such a cell's key carries ``scope = <paper>``, so it is comparable only within its paper.
:func:`incomparability` says in words why two keys differ.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

from reproduce.published import Column, Protocol, Row, Table

KEY_FIELDS = ("benchmark", "variant", "subset", "quantity", "student", "decoding", "temperature", "top_p",
              "k", "judge", "framework", "dataset", "scope")
REQUIRED = ("decoding", "k", "judge", "framework")
"""Protocol fields without which a cell is only comparable within its own paper (scope)."""
_AGGREGATE = re.compile(r"^(acc|avg|pass)@\d+$|^accuracy$|^relative_gain_pct$")


@dataclass
class ModelFacts:
    """Who a row's numbers belong to, from the paper's recipe."""
    student: str = "unknown"
    """The hub checkpoint the row's model starts from (its base model); ``unknown`` if not known."""
    teacher: str = ""
    data: str = ""
    method: str = ""
    role: str = ""
    """``base`` (an untrained hub checkpoint), ``trained`` (stages of the recipe), ``teacher``,
    ``published`` (another group's checkpoint), ``missing`` (no trainer here), ``derived``."""


def _stage_teacher(recipe: Any, ref: str) -> str:
    by_id = {s.id: s for s in recipe.stages}
    if ref not in by_id:
        return ref
    chain = [by_id[ref]]
    while chain[-1].init in by_id:
        chain.append(by_id[chain[-1].init])
    return f"{chain[-1].init} + {' -> '.join(s.method for s in reversed(chain))}"


def model_facts(recipe: Any, table_id: str, row: Row) -> ModelFacts:
    """The facts of ``row`` of ``table_id`` from ``recipe`` (reproduce.recipes.Recipe); a delta row
    takes its ``of`` row's student, and its method names the difference."""
    if recipe is None:
        return ModelFacts()
    try:
        rr = recipe.table(table_id).row(row.key, row.group)
    except KeyError:
        return ModelFacts()
    if rr.model is None:
        if row.delta is None:
            return ModelFacts(role="derived")
        try:
            of = model_facts(recipe, table_id, Row(key=row.delta.of, label="", values={}, group=row.group))
        except KeyError:
            of = ModelFacts()
        return ModelFacts(student=of.student, teacher=of.teacher, data=of.data, role="derived",
                          method=f"{row.delta.kind}: {row.delta.of} vs {row.delta.over}")
    m = rr.model
    if m.missing is not None:
        return ModelFacts(student=m.base or "unknown", method=m.missing, role="missing")
    if m.hub is not None:
        ck = recipe.checkpoints.get(m.hub)
        role = ck.role if ck else "base"
        if role == "base":
            return ModelFacts(student=m.hub, method="base", role="base")
        return ModelFacts(student=(ck.base if ck and ck.base else "unknown"), method=m.hub, role=role)
    stages = [recipe.stage(s) for s in m.stages]
    teachers = list(dict.fromkeys(_stage_teacher(recipe, s.teacher) for s in stages if s.teacher))
    data = list(dict.fromkeys(d for s in stages if (d := s.data_for("paper"))))
    return ModelFacts(student=stages[0].init, teacher=", ".join(teachers), data=" -> ".join(data),
                      method=" -> ".join(s.method for s in stages), role="trained")


def column_identity(table: Table, column: Column) -> tuple[str, str]:
    """(benchmark, variant) of a column: an average column is the benchmark ``avg(<columns>)``; a
    delta column is its source column's benchmark; a sub-metric such as ``vision_only`` is the variant."""
    for avg in table.all_averages():
        if avg.column == column.key:
            return f"avg({'+'.join(avg.of)})", ""
    if column.delta is not None:
        return column_identity(table, table.column(column.delta.of))
    variant = column.metric if column.metric and not _AGGREGATE.match(column.metric) else ""
    return column.benchmark or column.key, variant


def quantity(table: Table, row: Row, column: Column) -> str:
    """``score`` for a measured number; the derivation for a printed difference / relative gain."""
    if row.delta is not None:
        return f"{row.delta.kind} ({row.delta.of} vs {row.delta.over})"
    if column.delta is not None:
        return f"{column.delta.kind} vs row {column.delta.baseline_row}"
    return "score"


def comparability_key(*, benchmark: str, variant: str, quantity: str, student: str, protocol: Protocol,
                      dataset: str, paper: str) -> dict[str, Any]:
    """The fields that must be equal for two cells to be comparable (see the module docstring)."""
    unstated = [f for f in REQUIRED if getattr(protocol, f) is None]
    return {"benchmark": benchmark, "variant": variant, "subset": protocol.subset, "quantity": quantity,
            "student": student, "decoding": protocol.decoding,
            "temperature": protocol.temperature if protocol.decoding != "greedy" else None,
            "top_p": protocol.top_p if protocol.decoding != "greedy" else None, "k": protocol.k,
            "judge": protocol.judge, "framework": protocol.framework, "dataset": dataset,
            "scope": f"{paper} (not stated: {', '.join(unstated)})" if unstated else ""}


def key_id(key: dict[str, Any]) -> tuple:
    return tuple(key[f] for f in KEY_FIELDS)


def _show(v: Any) -> str:
    return "not stated" if v is None or v == "" else str(v)


def version_text(key: dict[str, Any]) -> str:
    """The benchmark variant and subset of a key, or ``not stated``."""
    return ", ".join(x for x in (key["variant"], key["subset"]) if x) or "not stated"


def decoding_text(key: dict[str, Any]) -> str:
    """``greedy``, ``sample T=1.0 top-p 0.95`` or ``not stated``, with ``k=16`` when known."""
    if key["decoding"] is None:
        d = "not stated"
    elif key["decoding"] == "greedy":
        d = "greedy"
    else:
        d = "sample" + (f" T={key['temperature']:g}" if key["temperature"] is not None else "") + (
            f" top-p {key['top_p']:g}" if key["top_p"] is not None else "")
    return d + (f", k={key['k']}" if key["k"] is not None else ", k not stated")


def incomparability(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Why cells with keys ``a`` and ``b`` are not comparable, one reason a kind; [] when they are."""
    reasons = []
    if a["benchmark"] != b["benchmark"]:
        reasons.append(f"different benchmark ({a['benchmark']} vs {b['benchmark']})")
    if (a["variant"], a["subset"]) != (b["variant"], b["subset"]):
        reasons.append(f"different benchmark version or subset ({version_text(a)} vs {version_text(b)})")
    if a["dataset"] != b["dataset"]:
        reasons.append(f"different benchmark data ({a['dataset']} vs {b['dataset']})")
    if a["quantity"] != b["quantity"]:
        reasons.append(f"different quantity ({a['quantity']} vs {b['quantity']})")
    if a["student"] != b["student"]:
        reasons.append(f"different base model ({a['student']} vs {b['student']})")
    if tuple(a[f] for f in ("decoding", "temperature", "top_p", "k")) != tuple(
            b[f] for f in ("decoding", "temperature", "top_p", "k")):
        reasons.append(f"different protocol: decoding {decoding_text(a)} vs {decoding_text(b)}")
    if a["judge"] != b["judge"]:
        reasons.append(f"different protocol: answer judge {_show(a['judge'])} vs {_show(b['judge'])}")
    if a["framework"] != b["framework"]:
        reasons.append(f"different protocol: framework {_show(a['framework'])} vs {_show(b['framework'])}")
    if a["scope"] != b["scope"] and (a["scope"] or b["scope"]):
        unstated = "; ".join(s for s in (a["scope"], b["scope"]) if s)
        reasons.append(f"protocol not fully stated ({unstated}): not assumed equal across papers")
    return reasons


__all__ = ["KEY_FIELDS", "ModelFacts", "REQUIRED", "column_identity", "comparability_key", "decoding_text",
           "incomparability", "key_id", "model_facts", "quantity", "version_text"]
