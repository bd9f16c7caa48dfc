"""The benchmark registry: name -> ``Benchmark``; one module per benchmark (see evals/README.md)."""
from __future__ import annotations

from importlib import import_module

from evals.benchmarks.base import Benchmark
from harness.errors import UnknownNameError

MODULES = ("mathvista", "mathverse", "mathvision", "mmmu_pro", "mmstar", "dynamath", "wemath",
           "logicvista", "geometry3k", "aime24", "aime25", "amc23", "math500", "minerva_math",
           "olympiadbench", "hallusionbench", "vstar", "infovqa", "tallyqa", "pixel_reasoner", "visualpuzzles",
           "vlms_are_blind", "mmk12", "counting")

REGISTRY: dict[str, Benchmark] = {}
for _m in MODULES:
    for _b in import_module(f"evals.benchmarks.{_m}").BENCHMARKS:
        REGISTRY[_b.name] = _b

# The averages the papers' tables print, as lists of (benchmark, metric).
GROUPS: dict[str, list[tuple[str, str]]] = {
    "vold": [("mmmu_pro", "accuracy"), ("mmstar", "accuracy"), ("mathvision", "accuracy"),
             ("mathvista", "accuracy"), ("mathverse", "accuracy"), ("dynamath", "accuracy"),
             ("wemath", "score_strict"), ("logicvista", "accuracy")],
    "reopold_math": [("aime24", "accuracy"), ("aime25", "accuracy"), ("amc23", "accuracy"),
                     ("math500", "accuracy"), ("minerva_math", "accuracy"), ("olympiadbench", "accuracy")],
    "reopold_visual": [("geometry3k", "accuracy"), ("mathverse", "accuracy"), ("mathvision", "accuracy"),
                       ("mathvista", "accuracy"), ("wemath", "accuracy"), ("hallusionbench", "accuracy")],
    "reopold_tool": [("pixel_reasoner", "accuracy"), ("vstar", "accuracy"), ("infovqa", "accuracy"),
                     ("tallyqa", "accuracy")],
    "vgs": [("mmmu_pro_4", "accuracy"), ("logicvista", "accuracy"),
            ("mathverse_vd", "accuracy"), ("mathverse_vo", "accuracy"), ("visualpuzzles", "accuracy"),
            ("mathvision", "accuracy"), ("vlms_are_blind", "accuracy")],
    "ptdpo_general": [("mmk12", "accuracy"), ("geometry3k", "accuracy"), ("mathverse_mc", "accuracy"),
                      ("mathvista_mc", "accuracy"), ("wemath", "accuracy")],
    "ptdpo_vision": [("mmmu_pro_4", "accuracy"), ("counting", "accuracy"), ("mathverse_v", "accuracy"),
                     ("logicvista", "accuracy")],
}
GROUPS["ptdpo_all"] = GROUPS["ptdpo_general"] + GROUPS["ptdpo_vision"]


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark ``name``; a KeyError lists the known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownNameError(f"unknown benchmark {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def resolve_names(spec: str | list[str]) -> list[str]:
    """``"a,b"`` / ``["a", "b"]`` / ``"all"`` / a group name -> benchmark names (validated)."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    names: list[str] = []
    for item in items:
        if item == "all":
            new = list(REGISTRY)
        elif item in GROUPS:
            new = [b for b, _ in GROUPS[item]]
        else:
            new = [get_benchmark(item).name]
        names += [n for n in new if n not in names]
    if not names:
        raise UnknownNameError("no benchmark given")
    return names


def group_average(summaries: dict[str, dict], group: str) -> float | None:
    """Unweighted mean of the group's metrics (as the papers' AVG columns); None if one is missing."""
    vals = []
    for bench, metric in GROUPS[group]:
        s = summaries.get(bench)
        if s is None:
            return None
        v = s["accuracy"] if metric == "accuracy" else s["metrics"].get(metric)
        if v is None:
            return None
        vals.append(v)
    return sum(vals) / len(vals)


__all__ = ["Benchmark", "REGISTRY", "GROUPS", "get_benchmark", "resolve_names", "group_average"]
