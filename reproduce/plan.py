"""Plan a table: which stages to train (once each), which models to evaluate on what, per profile.

The plan is plain data (``plan.json`` in the run directory) so that ``--dry-run`` can print it and
``reproduce report RUN_DIR`` can rebuild the report from the directory alone.

Sharing. A stage's identity is the hash of everything that determines its output: method,
resolved settings of the profile, data, the identity of the model it starts from (a hub id, a
smoke architecture, or the upstream stage's hash) and of its teacher. Two rows (or two tables run
into the same ``--out``) that need the same stage get one training run, in
``stages/<stage id>-<hash8>/``. Evaluations are keyed by model, not by row, so a model that
appears in several rows or tables is evaluated once: ``evals/<model id>/<decoding>/<benchmark>/``.

Row status in the plan: ``runnable``, ``needs <hub id> (paper profile)`` (smoke profile, a
published checkpoint of another group), or ``not implemented (<method>)`` (the method registry
says ``implemented=False``). A row that is not runnable keeps all its cells, as "not run".
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from reproduce.recipes import PROFILES, Recipe, Stage, TableRecipe, eval_key
from harness.errors import UnknownNameError

PLAN_FILE = "plan.json"
RUNNABLE = "runnable"


def needs_status(hub_id: str) -> str:
    return f"needs {hub_id} (paper profile)"


def not_implemented_status(methods: list[str]) -> str:
    return f"not implemented ({', '.join(methods)})"


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in text).strip("_")


@dataclass
class PlannedStage:
    id: str
    hash: str
    method: str
    implemented: bool
    dir: str
    """Run directory, relative to the run dir: ``stages/<id>-<hash8>``."""
    init: dict[str, str]
    """Where it starts: ``{"hub": id}``, ``{"smoke": kind}`` or ``{"stage": dir}``."""
    teacher: Optional[dict[str, str]]
    data: Optional[str]
    overrides: dict[str, Any]
    """The method settings passed to ``train`` (model / teacher are filled in at run time)."""
    status: str = RUNNABLE
    aliases: list[str] = field(default_factory=list)
    compute: str = ""
    source: str = ""


@dataclass
class PlannedModel:
    id: str
    """Evaluation key of the model: ``hub-<slug>``, ``smoke-<kind>`` or the final stage's dir name."""
    source: dict[str, str]
    status: str = RUNNABLE
    stages: list[str] = field(default_factory=list)
    """Stage dirs to train first, in order."""
    label: str = ""


@dataclass
class PlannedEval:
    model: str
    eval_key: str
    benchmarks: list[str]
    mode: str
    k: int
    temperature: float
    dir: str
    """``evals/<model id>/<eval key>``; evals.run writes ``<dir>/<benchmark>/records.jsonl``."""
    tool_rounds: int = 0
    """Multi-turn tool-use evaluation: at most this many tool calls a response (0: single-turn)."""


@dataclass
class PlannedCell:
    column: str
    benchmark: Optional[str]
    metric: str
    derived: bool
    higher_is_better: bool = True


@dataclass
class PlannedRow:
    key: str
    group: str
    derived: bool
    model: Optional[str]
    status: str
    note: str = ""
    evals: dict[str, str] = field(default_factory=dict)
    """Column -> key of the evaluation (``<model id>/<decoding>``) that measures it."""
    label: str = ""
    """What this row evaluates, in words: the row's own hub id or stages, and, where the profile
    substitutes or shares a model (a smoke stand-in, a stage that is the same computation as another
    row's), which model is actually evaluated. A model shared by several rows has one ``PlannedModel``
    whose label is the first row's; reports show this per-row label instead."""


@dataclass
class TablePlan:
    id: str
    rows: list[PlannedRow]
    columns: list[PlannedCell]
    memory: Optional[str] = None
    """Name of the memory accounting the report renders (``recipes.MEMORY_SECTIONS``)."""
    scaling: Optional[dict[str, Any]] = None
    """The planned test-time scaling request (``_Planner.scaling``): benchmarks, k (capped by the
    profile's ``max_sample_k``), the requested k, temperature, metrics, ``capped`` and its label, and
    per row ``{group, key, label, model, status, eval}`` (``eval``: a key of ``Plan.evals``)."""


@dataclass
class Plan:
    paper: str
    profile: str
    stages: dict[str, PlannedStage] = field(default_factory=dict)
    models: dict[str, PlannedModel] = field(default_factory=dict)
    evals: dict[str, PlannedEval] = field(default_factory=dict)
    tables: dict[str, TablePlan] = field(default_factory=dict)
    eval_settings: dict[str, Any] = field(default_factory=dict)

    # ---- persistence
    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Plan":
        return cls(
            paper=data["paper"], profile=data["profile"],
            stages={k: PlannedStage(**v) for k, v in data["stages"].items()},
            models={k: PlannedModel(**v) for k, v in data["models"].items()},
            evals={k: PlannedEval(**v) for k, v in data["evals"].items()},
            tables={k: TablePlan(id=v["id"], rows=[PlannedRow(**r) for r in v["rows"]],
                                 columns=[PlannedCell(**c) for c in v["columns"]],
                                 memory=v.get("memory"), scaling=v.get("scaling"))
                    for k, v in data["tables"].items()},
            eval_settings=data.get("eval_settings", {}),
        )

    def save(self, out: Path) -> None:
        from harness.run_dir import atomic_write_text
        atomic_write_text(Path(out) / PLAN_FILE, json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, out: Path) -> "Plan":
        path = Path(out) / PLAN_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no plan here; is {out} a reproduce run directory?")
        return cls.from_json(json.loads(path.read_text()))

    def merge(self, other: "Plan") -> "Plan":
        """This plan plus ``other``'s tables (same paper and profile): one run dir, many tables."""
        if (self.paper, self.profile) != (other.paper, other.profile):
            raise ValueError(f"run directory holds paper {self.paper!r} / profile {self.profile!r}; "
                             f"cannot add {other.paper!r} / {other.profile!r} (use another --out)")
        merged = Plan.from_json(self.to_json())
        merged.stages.update(other.stages)
        merged.models.update(other.models)
        merged.evals.update(other.evals)
        merged.tables.update(other.tables)
        merged.eval_settings = other.eval_settings
        return merged

    # ---- views
    def stages_for(self, table_id: str, rows: Optional[list[str]] = None) -> list[PlannedStage]:
        """The stages a table (or some of its rows) needs, in training order, each once."""
        out: dict[str, PlannedStage] = {}
        for m in self.models_for(table_id, rows):
            for d in m.stages:
                out.setdefault(d, self.stages[d])
        return list(out.values())

    def models_for(self, table_id: str, rows: Optional[list[str]] = None) -> list[PlannedModel]:
        seen: dict[str, PlannedModel] = {}
        for r in self.tables[table_id].rows:
            if r.model and (rows is None or r.key in rows or f"{r.group}/{r.key}" in rows):
                seen.setdefault(r.model, self.models[r.model])
        return list(seen.values())

    def evals_for(self, table_id: str, rows: Optional[list[str]] = None) -> list[PlannedEval]:
        """The table's evaluations (its cells', then its scaling curve's), each once."""
        keys: dict[str, None] = {}
        tp = self.tables[table_id]
        for r in tp.rows:
            if rows is None or r.key in rows or f"{r.group}/{r.key}" in rows:
                keys.update(dict.fromkeys(r.evals.values()))
        for r in (tp.scaling or {}).get("rows", []):
            if rows is None or r["key"] in rows or f"{r['group']}/{r['key']}" in rows:
                keys[r["eval"]] = None
        return [self.evals[k] for k in keys]


def _registry() -> Mapping[str, Any]:
    from methods.registry import METHODS
    return METHODS


class _Planner:
    def __init__(self, recipe: Recipe, profile: str, methods: Mapping[str, Any]):
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r} (profiles: {list(PROFILES)})")
        self.recipe, self.profile, self.methods = recipe, profile, methods
        settings = recipe.eval_settings(profile)
        self.plan = Plan(paper=recipe.paper, profile=profile, eval_settings=asdict(settings))
        self._by_stage_id: dict[str, PlannedStage] = {}

    # A model reference (stage init / teacher): returns (identity for hashing, resolved source, status)
    def _ref(self, ref: str) -> tuple[str, dict[str, str], str]:
        if ref in {s.id for s in self.recipe.stages}:
            st = self._stage(self.recipe.stage(ref))
            return st.hash, {"stage": st.dir}, st.status
        ckpt = self.recipe.checkpoints[ref]
        if self.profile == "smoke" and ckpt.smoke_stage is not None:  # a trained smoke stand-in
            return self._ref(ckpt.smoke_stage)
        if self.profile == "paper":
            return f"hub:{ref}", {"hub": ref}, RUNNABLE
        if ckpt.smoke is None:
            return f"hub:{ref}", {"hub": ref}, needs_status(ref)
        return f"smoke:{ckpt.smoke}", {"smoke": ckpt.smoke}, RUNNABLE

    def _stage(self, stage: Stage) -> PlannedStage:
        if stage.id in self._by_stage_id:
            return self._by_stage_id[stage.id]
        if self.profile not in stage.profiles:
            raise ValueError(f"{self.recipe.paper}: stage {stage.id} runs only in the {'/'.join(stage.profiles)} "
                             f"profile, not in {self.profile}")
        if stage.method not in self.methods:
            raise UnknownNameError(f"{self.recipe.paper}: stage {stage.id}: method {stage.method!r} is not in "
                           f"methods.registry.METHODS (known: {sorted(self.methods)})")
        implemented = bool(getattr(self.methods[stage.method], "implemented", False))
        init_id, init_src, init_status = self._ref(stage.init)
        teacher_id, teacher_src, teacher_status = (None, None, RUNNABLE)
        if stage.teacher is not None:
            teacher_id, teacher_src, teacher_status = self._ref(stage.teacher)
        overrides = stage.overrides(self.profile)
        scale = self.recipe.scale
        if self.profile == "paper" and scale is not None and getattr(self.methods[stage.method], "trains", True):
            overrides = {"distributed": scale.strategy_for(stage.method), **overrides}
        data = stage.data_for(self.profile)
        h = _hash({"method": stage.method, "profile": self.profile, "overrides": overrides, "data": data,
                   "init": init_id, "teacher": teacher_id})
        status = RUNNABLE
        for s in (init_status, teacher_status):
            if s != RUNNABLE:
                status = s
                break
        if status == RUNNABLE and not implemented:
            status = not_implemented_status([stage.method])
        existing = next((p for p in self.plan.stages.values() if p.hash == h), None)
        if existing is not None:  # same computation under another stage id: train once
            existing.aliases.append(stage.id)
            self._by_stage_id[stage.id] = existing
            return existing
        planned = PlannedStage(
            id=stage.id, hash=h, method=stage.method, implemented=implemented,
            dir=f"stages/{stage.id}-{h[:8]}", init=init_src, teacher=teacher_src, data=data,
            overrides=overrides, status=status, compute=stage.compute, source=stage.source)
        self.plan.stages[planned.dir] = planned
        self._by_stage_id[stage.id] = planned
        return planned

    def _chain(self, last: PlannedStage) -> list[str]:
        dirs = [last.dir]
        cur = last
        while "stage" in cur.init:
            cur = self.plan.stages[cur.init["stage"]]
            dirs.append(cur.dir)
        for p in (self.plan.stages[d] for d in list(dirs)):  # teachers trained by a stage come first
            if p.teacher and "stage" in p.teacher:
                for d in self._chain(self.plan.stages[p.teacher["stage"]]):
                    if d not in dirs:
                        dirs.append(d)
        return list(reversed(dirs))

    def _stage_model(self, last: PlannedStage, label: str) -> PlannedModel:
        """The model a stage chain ending in ``last`` produces; its status is the chain's first
        "needs ...", else its unimplemented methods, else runnable."""
        dirs = self._chain(last)
        chain = [self.plan.stages[d] for d in dirs]
        needs = [p.status for p in chain if p.status.startswith("needs ")]
        missing = sorted({p.method for p in chain if not p.implemented})
        status = needs[0] if needs else not_implemented_status(missing) if missing else RUNNABLE
        return PlannedModel(id=last.dir.split("/", 1)[1], source={"stage": last.dir}, status=status, stages=dirs,
                            label=label)

    def _model(self, row_model: Any) -> tuple[PlannedModel, str]:
        """The model a row evaluates, and the row's label for it (see ``PlannedRow.label``)."""
        if row_model.missing is not None:
            m = PlannedModel(id=f"missing-{_slug(row_model.missing)}", source={"missing": row_model.missing},
                             status=not_implemented_status([row_model.missing]), label=row_model.missing)
        elif row_model.hub is not None and self.profile == "smoke" and \
                self.recipe.checkpoints[row_model.hub].smoke_stage is not None:
            hub = row_model.hub
            sid = self.recipe.checkpoints[hub].smoke_stage
            m = self._stage_model(self._stage(self.recipe.stage(sid)), f"{sid} (smoke stand-in for {hub}, trained here)")
        elif row_model.hub is not None:
            hub = row_model.hub
            ckpt = self.recipe.checkpoints[hub]
            if self.profile == "paper":
                m = PlannedModel(id=f"hub-{_slug(hub)}", source={"hub": hub}, label=hub)
            elif ckpt.smoke is None:
                m = PlannedModel(id=f"hub-{_slug(hub)}", source={"hub": hub}, status=needs_status(hub), label=hub)
            else:
                m = PlannedModel(id=f"smoke-{ckpt.smoke}", source={"smoke": ckpt.smoke},
                                 label=f"tiny {ckpt.smoke} (smoke stand-in for {hub})")
        else:
            planned = [self._stage(self.recipe.stage(s)) for s in row_model.stages]
            m = self._stage_model(planned[-1], " -> ".join(row_model.stages))
        label = m.label  # this row's own hub id / stages, before a shared model keeps another row's label
        if row_model.stages:
            shared = [p.id for p in planned]
            if shared != list(row_model.stages):  # the same computation as another row's stages: trained once
                label += (f" (in the {self.profile} profile the same run as {' -> '.join(shared)}; "
                          f"evaluated: {m.id})")
        self.plan.models.setdefault(m.id, m)
        return self.plan.models[m.id], label

    def table(self, table: TableRecipe) -> TablePlan:
        cells = [PlannedCell(column=c.key, benchmark=c.benchmark, metric=c.metric, derived=c.derived,
                             higher_is_better=c.higher_is_better) for c in table.columns]
        rows = []
        for r in table.rows:
            if r.derived:
                rows.append(PlannedRow(key=r.key, group=r.group, derived=True, model=None,
                                       status="derived", note=r.note))
                continue
            m, label = self._model(r.model)
            cap = self.plan.eval_settings.get("max_sample_k")
            round_cap = self.plan.eval_settings.get("max_tool_rounds")
            capped_rounds = []  # multi-turn columns whose tool rounds the profile lowers
            if cap and (r.mode == "sample" and (r.k or 1) > cap):
                label += f" [{self.profile}: Acc@{cap} at T={r.temperature:g}, not Acc@{r.k}]"
            capped_columns = []  # columns whose own sampled k the cap lowers (e.g. REOPOLD's Avg@32)
            prow = PlannedRow(key=r.key, group=r.group, derived=False, model=m.id, status=m.status, note=r.note,
                              label=label)
            rows.append(prow)
            for col in table.columns:
                if col.derived:
                    continue
                mode, k, temperature = r.decoding(col)
                if mode == "sample" and cap and k > cap:
                    if r.mode != "sample":
                        capped_columns.append((col.key, k))
                    k = cap
                rounds = col.tool_rounds
                if rounds and round_cap is not None and rounds > round_cap:
                    capped_rounds.append((col.key, rounds))
                    rounds = round_cap
                prow.evals[col.key] = self._add_eval(m.id, mode, k, temperature, col.benchmark, rounds)
            if capped_rounds:
                rs = "/".join(sorted({str(n) for _, n in capped_rounds}))
                prow.label += (f" [{self.profile}: at most {round_cap} tool round(s), not {rs}, on "
                               f"{', '.join(key for key, _ in capped_rounds)}]")
            if capped_columns:
                ks = "/".join(sorted({f"Avg@{k}" for _, k in capped_columns}))
                prow.label += (f" [{self.profile}: Avg@{cap}, not {ks}, on "
                               f"{', '.join(key for key, _ in capped_columns)}]")
        tp = TablePlan(id=table.id, rows=rows, columns=cells, memory=table.memory,
                       scaling=self.scaling(table, rows) if table.scaling else None)
        self.plan.tables[table.id] = tp
        return tp

    def _add_eval(self, model_id: str, mode: str, k: int, temperature: float, benchmark: str,
                  tool_rounds: int = 0) -> str:
        """Plan ``benchmark`` into the model's evaluation with this decoding (shared with every cell
        that decodes the same way); returns its key in ``Plan.evals``."""
        dec = eval_key(mode, k, temperature, tool_rounds)
        ek = f"{model_id}/{dec}"
        ev = self.plan.evals.get(ek)
        if ev is None:
            ev = PlannedEval(model=model_id, eval_key=dec, benchmarks=[], mode=mode, k=k,
                             temperature=temperature, dir=f"evals/{model_id}/{dec}", tool_rounds=tool_rounds)
            self.plan.evals[ek] = ev
        if benchmark not in ev.benchmarks:
            ev.benchmarks.append(benchmark)
        return ek

    def scaling(self, table: TableRecipe, rows: list[PlannedRow]) -> dict[str, Any]:
        """The planned test-time scaling curve of ``table`` (``recipes.ScalingRecipe``): one sampled
        evaluation with k draws per listed row's model on the requested benchmarks (shared, like any
        evaluation, with cells that use the same decoding), k capped by ``max_sample_k``."""
        sc = table.scaling
        assert sc is not None
        cap = self.plan.eval_settings.get("max_sample_k")
        k = min(sc.k, cap) if cap else sc.k
        capped = k < sc.k
        planned = {(r.group, r.key): r for r in rows}
        out_rows = []
        for ref in sc.rows:
            group, _, key = ref.rpartition("/")
            rr = table.row(key, group if "/" in ref else None)
            pr = planned[(rr.group, rr.key)]
            ek = ""
            for b in sc.benchmarks:
                ek = self._add_eval(pr.model, "sample", k, sc.temperature, b)
            out_rows.append({"group": pr.group, "key": pr.key, "label": pr.label, "model": pr.model,
                             "status": pr.status, "eval": ek})
        return {"benchmarks": list(sc.benchmarks), "k": k, "k_requested": sc.k, "temperature": sc.temperature,
                "metrics": list(sc.metrics), "capped": capped,
                "label": f"{self.profile}: k \u2264 {k}, not {sc.k}" if capped else f"k = 1..{k}",
                "source": sc.source, "note": sc.note, "rows": out_rows}


def benchmark_available(name: str) -> bool:
    """Whether ``evals`` has the benchmark; a column naming one it lacks is reported, not run, so
    that it does not fail the evaluation of the row's other columns."""
    from evals.benchmarks import REGISTRY

    return name in REGISTRY


def build_plan(recipe: Recipe, table_ids: list[str], profile: str = "smoke",
               methods: Optional[Mapping[str, Any]] = None) -> Plan:
    """Plan ``table_ids`` of ``recipe`` under ``profile``; ``methods`` defaults to the registry."""
    planner = _Planner(recipe, profile, _registry() if methods is None else methods)
    for tid in table_ids:
        planner.table(recipe.table(tid))
    return planner.plan


def format_plan(plan: Plan, table_id: str, rows: Optional[list[str]] = None) -> str:
    """Human-readable plan (``--dry-run``): each run, its config, the paper's compute where stated."""
    from tabulate import tabulate

    lines = [f"Plan: {plan.paper} {table_id}, profile {plan.profile}"
             + ("  [SMOKE: tiny models, small real and generated data, CPU]" if plan.profile == "smoke" else "")]
    stages = plan.stages_for(table_id, rows)
    lines.append(f"\nTraining runs ({len(stages)}; each trained once, shared by every row that needs it):")
    if not stages:
        lines.append("  (none)")
    for i, s in enumerate(stages, 1):
        init = next(iter(s.init.items()))
        teacher = f", teacher {next(iter(s.teacher.items()))[1]}" if s.teacher else ""
        also = f" (also: {', '.join(s.aliases)})" if s.aliases else ""
        lines.append(f"  {i}. {s.id}{also} -> {s.dir}  [{s.status}]")
        lines.append(f"     method {s.method}, from {init[0]} {init[1]}{teacher}, data {s.data}")
        lines.append(f"     config: {json.dumps(s.overrides, sort_keys=True, default=str)}")
        if s.source:
            lines.append(f"     source: {s.source}")
        lines.append(f"     paper's compute: {s.compute or 'not stated'}")
    ev = plan.eval_settings
    lines.append(f"\nEvaluations (source {ev.get('source')}, limit {ev.get('limit')}, engine {ev.get('engine')}):")
    evals = plan.evals_for(table_id, rows)
    for e in evals:
        status = plan.models[e.model].status
        lines.append(f"  - {e.model} [{status}]: {e.mode}, k={e.k}"
                     + (f", T={e.temperature:g}" if e.mode == "sample" else "")
                     + (f", multi-turn with tools, at most {e.tool_rounds} tool round(s)" if e.tool_rounds else "")
                     + f" on {', '.join(e.benchmarks)} -> {e.dir}")
    tp = plan.tables[table_id]
    if tp.scaling:
        sc = tp.scaling
        lines.append(f"\nTest-time scaling ({sc['source'] or 'requested by the recipe'}): "
                     f"{'/'.join(m.capitalize() + '@k' for m in sc['metrics'])} for {sc['label']} "
                     f"(sampled, T={sc['temperature']:g}) on {', '.join(sc['benchmarks'])}, rows "
                     + ", ".join(f"{r['group'] + '/' if r['group'] else ''}{r['key']} ({r['eval']})" for r in sc["rows"]))
    if tp.memory:
        lines.append(f"\nMemory accounting rendered in the report: {tp.memory}")
    lines.append("\nRows:")
    table = [[(r.group + "/" if r.group else "") + r.key, r.model or "-", r.label or "-", r.status]
             for r in tp.rows if rows is None or r.key in rows]
    lines.append(tabulate(table, headers=["row", "model", "evaluates", "status"]))
    return "\n".join(lines)


__all__ = ["PLAN_FILE", "RUNNABLE", "Plan", "PlannedCell", "PlannedEval", "PlannedModel", "PlannedRow",
           "PlannedStage", "TablePlan", "build_plan", "format_plan", "needs_status", "not_implemented_status"]
