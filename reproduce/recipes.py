"""Recipes: how to obtain every row and column of a paper's published results tables.

One YAML file a paper lives in ``reproduce/papers/<paper>.yaml``. Loading goes through
:func:`harness.config.from_dict`, so an unknown key or a wrong type is a ``ConfigError`` naming
the file and the dotted key. Layout::

    paper: vold
    smoke_model: qwen2_5_vl          # tiny architecture standing in for the student in smoke
    checkpoints:                     # every hub id the recipe names, and what it is
      Qwen/Qwen2.5-VL-3B-Instruct: {role: base, smoke: qwen2_5_vl}
      Qwen/Qwen3-8B: {role: teacher, smoke: qwen3}
      omlab/VLM-R1-Qwen2.5VL-3B-Math-0305: {role: published}   # another group's trained model
    stages:                          # defined once; rows and tables share them
      - id: sft_teacher_mot
        method: sft                  # a key of methods.registry.METHODS
        init: Qwen/Qwen2.5-VL-3B-Instruct    # a hub id of `checkpoints` or another stage's id
        teacher: null                # hub id or stage id (frozen teacher), if the method has one
        data: {paper: mot-teacher-8b, smoke: smoke-text-math}
        config: {}                   # method settings both profiles share (beta, masking, ...)
        paper: {lr: 5.0e-5, steps: 4000}    # the published scale (cite in `source`)
        smoke: {steps: 2}            # smoke overrides over the method's smoke profile
        source: "Table 4; §4.1"
        compute: "32 A100 (App. A)"
    scale:                           # the paper profile's hardware and strategy (PaperScale)
      {hardware: "32 A100 (App. A)", distributed: zero3, nproc_per_node: 8, nnodes: 4}
    evaluation:                      # evals.run settings per profile
      smoke: {limit: 4, source: smoke}
      paper: {source: hub}
    tables:
      - id: table1
        columns:
          - {key: mathvista, benchmark: mathvista, metric: accuracy, mode: greedy, k: 1}
          - {key: avg, derived: true}        # computed from the published table's definition
        rows:
          - {key: qwen2_5_vl_3b, model: {hub: Qwen/Qwen2.5-VL-3B-Instruct}}
          - {key: vold, model: {stages: [sft_teacher_mot, vold_rl]}}
          - {key: gain, derived: true}       # a delta row of the published table
        scaling:                     # optional: a test-time scaling curve (Pass@k / Avg@k / Maj@k vs k)
          {benchmarks: [mathvista], rows: [vold], k: 32, temperature: 0.6, source: "Figure 1(b)"}
        memory: reopold              # optional: a memory accounting rendered next to the table

Smoke profile and hub checkpoints. A row ``model: {hub: X}`` is evaluated as-is. In the smoke
profile, a ``base`` checkpoint with a ``smoke`` architecture is replaced by the tiny random model
of that same architecture (``harness.models.smoke_model_path``): that is what training starts from
in smoke too, so the row is the honest "before" of the trained rows, labelled as a smoke stand-in.
A ``published`` checkpoint (another group's trained model) has no stand-in: in smoke its row is
reported as "needs <hub id> (paper profile)" and every cell as not run.

Trained smoke stand-ins. A checkpoint may name ``smoke_stage: <stage id>``: in smoke that stage is
trained and its output stands in for the checkpoint wherever the recipe names it (stage ``init`` /
``teacher``, rows ``model: {hub: ...}``); the paper profile loads the hub checkpoint. A stage with
``profiles: [smoke]`` runs only in smoke (planning it in the paper profile is an error). REOPOLD
Table 6 uses both for its SFT-ed tool-using warm start. A column with ``tool_rounds: N`` is
evaluated multi-turn with tools (``evals.run(tool_rounds=N)``); ``evaluation.<profile>.
max_tool_rounds`` caps N and ``tool_max_new_tokens`` sets those columns' generation cap.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

from harness.config import merge
from reproduce.published import find_paper_yaml, load_paper_yaml
from harness.errors import UnknownNameError

PAPERS_DIR = Path(__file__).resolve().parent / "papers"
PROFILES = ("smoke", "paper")
SmokeKind = Literal["qwen2_5_vl", "qwen3", "qwen3_vl", "qwen2"]
_ID = re.compile(r"^[a-z0-9][a-z0-9_@.]*$")


@dataclass
class Checkpoint:
    """A model on the hub. ``base``/``teacher`` have a smoke stand-in; ``published`` has none."""
    role: Literal["base", "teacher", "published"]
    smoke: Optional[SmokeKind] = None
    base: Optional[str] = None
    """For a trained checkpoint (``published``, or a teacher trained by others): the hub id it was
    trained from, so comparisons know its base model (descriptive; reproduce compare)."""
    smoke_stage: Optional[str] = None
    """A stage id: in the smoke profile this checkpoint is stood in for by that stage's output
    instead of the bare tiny ``smoke`` model (e.g. a tool-using SFT checkpoint whose smoke stand-in
    must be taught the tool-call format first). Stages that start from the checkpoint start from
    that stage's output, and a row that evaluates the checkpoint evaluates it. The paper profile
    uses the hub checkpoint."""
    note: str = ""

    def __post_init__(self) -> None:
        if self.role == "published" and (self.smoke is not None or self.smoke_stage is not None):
            raise ValueError("a published checkpoint has no smoke stand-in (smoke: null, no smoke_stage)")
        if self.role != "published" and self.smoke is None:
            raise ValueError(f"a {self.role} checkpoint needs `smoke:` (the tiny architecture standing in for it)")


@dataclass
class PerProfile:
    """A value that differs between profiles (e.g. the training set)."""
    paper: str
    smoke: Optional[str] = None
    """None: the method's own smoke-profile data set."""

    def get(self, profile: str) -> Optional[str]:
        return getattr(self, profile)


@dataclass
class Stage:
    id: str
    method: str
    init: str
    data: Union[str, PerProfile]
    """A training-set name (harness.data.load_training_set) or one per profile."""
    teacher: Optional[str] = None
    config: dict[str, Any] = field(default_factory=dict)
    paper: dict[str, Any] = field(default_factory=dict)
    smoke: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    compute: str = ""
    note: str = ""
    profiles: list[str] = field(default_factory=lambda: list(PROFILES))
    """The profiles the stage runs in (e.g. ``[smoke]`` for a smoke-only warm start that the paper
    profile loads from the hub instead); planning it in another profile is an error."""

    def __post_init__(self) -> None:
        if not _ID.match(self.id):
            raise ValueError(f"stage id {self.id!r} is not snake_case")
        bad = [p for p in self.profiles if p not in PROFILES]
        if bad or not self.profiles:
            raise ValueError(f"stage {self.id}: profiles {self.profiles}: give some of {list(PROFILES)}")
        for reserved in ("model", "data", "teacher"):
            for part in ("config", "paper", "smoke"):
                if reserved in getattr(self, part):
                    raise ValueError(f"stage {self.id}: {part}.{reserved}: set it with the stage's own "
                                     f"`init` / `data` / `teacher` keys")

    def data_for(self, profile: str) -> Optional[str]:
        return self.data if isinstance(self.data, str) else self.data.get(profile)

    def overrides(self, profile: str) -> dict[str, Any]:
        """The method settings of ``profile`` (without model / data / teacher)."""
        return merge(dict(self.config), getattr(self, profile))


@dataclass
class ModelSpec:
    """Exactly one of: a hub checkpoint, a chain of stages (the last one's output), or
    ``missing``: the name of a method this project has no trainer for and no released checkpoint
    of (a baseline such as PAPO); the row is reported as "not implemented (<missing>)"."""
    hub: Optional[str] = None
    stages: list[str] = field(default_factory=list)
    missing: Optional[str] = None
    base: Optional[str] = None
    """For a ``missing`` row: the hub id the missing method starts from (descriptive; reproduce compare)."""

    def __post_init__(self) -> None:
        if self.base is not None and self.missing is None:
            raise ValueError("model: `base` describes a `missing` row only (a hub or stage row has its own)")
        if sum([self.hub is not None, bool(self.stages), self.missing is not None]) != 1:
            raise ValueError("model: give exactly one of `hub`, `stages` or `missing`")


@dataclass
class ColumnRecipe:
    key: str
    benchmark: Optional[str] = None
    metric: str = "accuracy"
    """``accuracy`` (the summary's headline) or a sub-metric name of the summary's ``metrics``."""
    mode: Literal["greedy", "sample"] = "greedy"
    k: int = 1
    temperature: float = 0.0
    derived: bool = False
    """An average / delta column: computed from the published table's definition, not evaluated."""
    higher_is_better: bool = True
    tool_rounds: int = 0
    """Multi-turn tool-use evaluation (``evals.run``'s ``tool_rounds``): at most this many tool calls
    (``crop_image``) per response, each observation shown to the model, then a final round; 0:
    single-turn. A profile may cap it (``EvalSettings.max_tool_rounds``)."""
    note: str = ""

    def __post_init__(self) -> None:
        if self.derived == (self.benchmark is not None):
            raise ValueError(f"column {self.key}: give `benchmark` or `derived: true`, not both or neither")
        if self.tool_rounds < 0:
            raise ValueError(f"column {self.key}: tool_rounds must be >= 0")
        if self.k < 1:
            raise ValueError(f"column {self.key}: k must be >= 1")
        if self.mode == "sample" and self.temperature <= 0:
            raise ValueError(f"column {self.key}: mode sample needs temperature > 0")



MEMORY_SECTIONS = {"reopold": "methods.reopold.memory"}
"""``TableRecipe.memory`` name -> the module whose ``report_section()`` the report renders."""


def eval_key(mode: str, k: int, temperature: float, tool_rounds: int = 0) -> str:
    """Evaluations sharing this key share one evals.run call (same decoding, same tool rounds)."""
    t = f"-t{temperature:g}" if mode == "sample" else ""
    tools = f"-tools{tool_rounds}" if tool_rounds else ""
    return f"{mode}-k{k}{t}{tools}"


@dataclass
class RowRecipe:
    key: str
    group: str = ""
    model: Optional[ModelSpec] = None
    derived: bool = False
    """A delta row of the published table: computed from two other rows' measurements."""
    mode: Optional[Literal["greedy", "sample"]] = None
    """Decoding of this row's evaluations when it differs from the columns' (e.g. Acc@16 rows)."""
    k: Optional[int] = None
    temperature: Optional[float] = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.derived == (self.model is not None):
            raise ValueError(f"row {self.key}: give `model` or `derived: true`, not both or neither")
        if self.mode == "sample" and not (self.temperature or 0) > 0:
            raise ValueError(f"row {self.key}: mode sample needs temperature > 0")

    def decoding(self, column: "ColumnRecipe") -> tuple[str, int, float]:
        """(mode, k, temperature) of this row's evaluation for ``column``."""
        return (self.mode or column.mode, self.k or column.k,
                self.temperature if self.temperature is not None else column.temperature)


SCALING_METRICS = ("pass", "avg", "maj")


@dataclass
class ScalingRecipe:
    """A test-time scaling curve requested on a table (REOPOLD Figure 1(b) / Figure 13): the listed
    rows are also evaluated with ``k`` sampled draws per item on ``benchmarks``, and the report
    plots Pass@k / Avg@k / Maj@k against k = 1..k (``evals.scaling``). The profile's
    ``max_sample_k`` caps k (smoke: k <= 4, and the report says so)."""

    benchmarks: list[str]
    rows: list[str]
    """Rows of the table, ``group/key`` (or ``key`` when unambiguous)."""
    k: int = 32
    temperature: float = 1.0
    metrics: list[str] = field(default_factory=lambda: list(SCALING_METRICS))
    source: str = ""
    """Where the paper shows it (figure, section)."""
    note: str = ""

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"scaling: k must be >= 1, got {self.k}")
        if self.temperature <= 0:
            raise ValueError("scaling: sampled draws need temperature > 0")
        if not self.benchmarks or not self.rows:
            raise ValueError("scaling: give at least one benchmark and one row")
        bad = [m for m in self.metrics if m not in SCALING_METRICS]
        if bad:
            raise ValueError(f"scaling: unknown metrics {bad} (known: {list(SCALING_METRICS)})")


@dataclass
class TableRecipe:
    id: str
    columns: list[ColumnRecipe]
    rows: list[RowRecipe]
    note: str = ""
    memory: Optional[str] = None
    """A memory accounting the report renders next to the table (``reopold``: methods/reopold/memory.py,
    Table 8's variants at the paper's sizes)."""
    scaling: Optional[ScalingRecipe] = None
    """A test-time scaling curve on some rows (see ``ScalingRecipe``)."""

    def __post_init__(self) -> None:
        keys = [c.key for c in self.columns]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{self.id}: duplicate column keys")
        seen = set()
        for r in self.rows:
            if (r.group, r.key) in seen:
                raise ValueError(f"{self.id}: duplicate row {r.group}/{r.key}")
            seen.add((r.group, r.key))
        if self.memory is not None and self.memory not in MEMORY_SECTIONS:
            raise ValueError(f"{self.id}: memory: unknown accounting {self.memory!r} (known: {list(MEMORY_SECTIONS)})")
        if self.scaling is not None:
            for ref in self.scaling.rows:
                group, _, key = ref.rpartition("/")
                row = self.row(key, group if "/" in ref else None)
                if row.derived:
                    raise ValueError(f"{self.id}: scaling: row {ref} is derived (no model to sample)")

    def row(self, key: str, group: Optional[str] = None) -> RowRecipe:
        found = [r for r in self.rows if r.key == key and (group is None or r.group == group)]
        if len(found) != 1:
            raise UnknownNameError(f"{self.id}: row {key!r}{f' (group {group!r})' if group else ''}: "
                           f"{'ambiguous' if found else 'unknown'} (rows: {[r.key for r in self.rows]})")
        return found[0]

    def column(self, key: str) -> ColumnRecipe:
        for c in self.columns:
            if c.key == key:
                return c
        raise UnknownNameError(f"{self.id}: no column {key!r}")


SMOKE_ITEMS = 48
"""Default smoke items per benchmark: a 95% interval of about +-14 points at 50% accuracy."""


@dataclass
class EvalSettings:
    limit: Optional[int] = None
    source: str = "hub"
    engine: str = "hf"
    batch_size: int = 8
    judge_url: Optional[str] = None
    max_new_tokens: Optional[int] = None
    """Generation cap per response; None: evals' default. Smoke keeps it small: a tiny random model
    rarely stops by itself, so every response would run to the cap."""
    smoke_n: int = SMOKE_ITEMS
    """Items per benchmark when ``source`` is ``smoke`` (each benchmark's ``smoke_rows``: held-out
    easy-vqa / champ items in its schema), enough that an accuracy interval has width."""
    system: Optional[str] = None
    """System prompt of every evaluation (``evals.run``'s ``system``: a key of
    ``evals.prompts.SYSTEM_PROMPTS`` such as ``vgs``, or literal text); None: none."""
    max_sample_k: Optional[int] = None
    """Cap on the draws of sampled rows (e.g. smoke evaluates Acc@16 rows with k = 2); a capped
    row's label says so. None: the recipe's k."""
    max_tool_rounds: Optional[int] = None
    """Cap on the tool rounds of multi-turn columns (smoke: fewer rounds than the paper's 5); a
    capped row's label says so. None: the columns' own ``tool_rounds``."""
    tool_max_new_tokens: Optional[int] = None
    """Generation cap per response (over all rounds) of multi-turn columns; None: ``max_new_tokens``.
    A tool call alone is ~35 tokens, so smoke gives these columns more than its single-turn cap."""
    device: Optional[str] = None
    """Where the ``hf`` engine runs the model (``cpu``, ``cuda``, ``cuda:N``, ``auto``); None: evals'
    default (CPU). vLLM places the model itself."""
    dtype: Optional[str] = None
    """Weights dtype of the evaluated model; None: evals' default (float32)."""
    vllm: dict[str, Any] = field(default_factory=dict)
    """Engine ``vllm``'s settings (fields of ``harness.train_config.VLLMSettings``); evaluation has the
    GPUs to itself, so the paper profile gives vLLM most of their memory."""

    def __post_init__(self) -> None:
        if self.vllm:
            from harness.config import from_dict
            from harness.train_config import VLLMSettings

            from_dict(VLLMSettings, self.vllm, source="evaluation.vllm")  # a one-line error for a bad key


Strategy = Literal["ddp", "fsdp", "zero2", "zero3"]


@dataclass
class PaperScale:
    """The published hardware and how the paper profile runs on it (a recipe's ``scale:``).

    ``distributed`` is written into every training stage's paper-profile settings (a stage's own
    ``paper.distributed``, then ``per_method``, win); ``nproc_per_node`` x ``nnodes`` is the launch
    that matches the paper's GPUs (``reproduce ... --nproc-per-node N --nnodes M``). Global batch
    sizes are the recipe's on any number of GPUs (the trainer accumulates to them), so fewer GPUs
    change the time, not the update."""

    hardware: str
    """What the paper trained on, with its source."""
    distributed: Strategy = "fsdp"
    """The student's strategy for that hardware (harness.distributed; docs/scale_out.md)."""
    nproc_per_node: int = 8
    nnodes: int = 1
    per_method: dict[str, Strategy] = field(default_factory=dict)
    """Strategy by method where it differs (a method whose update needs full gradients on every rank)."""
    source: str = ""
    """Why this strategy: the paper's framework, or the memory estimate ([A])."""

    def __post_init__(self) -> None:
        if self.nproc_per_node < 1 or self.nnodes < 1:
            raise ValueError(f"scale: nproc_per_node and nnodes must be >= 1, got {self.nproc_per_node}, {self.nnodes}")

    def strategy_for(self, method: str) -> str:
        return self.per_method.get(method, self.distributed)

    def launch_flags(self) -> str:
        """The ``reproduce`` options of this launch."""
        flags = f"--nproc-per-node {self.nproc_per_node}"
        if self.nnodes > 1:
            flags += f" --nnodes {self.nnodes} --node-rank R --master-addr HOST0"
        return flags


@dataclass
class Recipe:
    paper: str
    tables: list[TableRecipe]
    smoke_model: SmokeKind = "qwen2_5_vl"
    published: str = ""
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)
    stages: list[Stage] = field(default_factory=list)
    evaluation: dict[str, EvalSettings] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    scale: Optional[PaperScale] = None
    """The paper profile's hardware, launch and strategy (None: every stage's own ``distributed``)."""

    def __post_init__(self) -> None:
        if not self.published:
            self.published = self.paper
        ids = [s.id for s in self.stages]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate stage ids {dup}")
        for p in self.evaluation:
            if p not in PROFILES:
                raise ValueError(f"evaluation.{p}: unknown profile (profiles: {list(PROFILES)})")
        tids = [t.id for t in self.tables]
        if len(set(tids)) != len(tids):
            raise ValueError("duplicate table ids")
        by_id = {s.id: s for s in self.stages}

        def model_ref(where: str, ref: Optional[str]) -> None:
            if ref is None or ref in by_id:
                return
            if ref not in self.checkpoints:
                raise ValueError(f"{where}: {ref!r} is neither a stage id nor a hub id listed in `checkpoints`")

        for hub, ckpt in self.checkpoints.items():
            if ckpt.smoke_stage is None:
                continue
            if ckpt.smoke_stage not in by_id:
                raise ValueError(f"checkpoint {hub}: smoke_stage {ckpt.smoke_stage!r} is not a stage id")
            if "smoke" not in by_id[ckpt.smoke_stage].profiles:
                raise ValueError(f"checkpoint {hub}: smoke_stage {ckpt.smoke_stage!r} does not run in the smoke profile")
            cur, seen, visited = by_id[ckpt.smoke_stage], set(), set()
            while cur.id not in visited:  # its chain must not start from this checkpoint (a cycle in smoke)
                visited.add(cur.id)
                nxt = cur.init
                if nxt in self.checkpoints and self.checkpoints[nxt].smoke_stage is not None:
                    if nxt == hub or nxt in seen:
                        raise ValueError(f"checkpoint {hub}: smoke_stage {ckpt.smoke_stage!r} starts from {nxt} "
                                         f"(in smoke, from itself)")
                    seen.add(nxt)
                    nxt = self.checkpoints[nxt].smoke_stage
                if nxt not in by_id:
                    break
                cur = by_id[nxt]
        for s in self.stages:
            model_ref(f"stage {s.id}: init", s.init)
            model_ref(f"stage {s.id}: teacher", s.teacher)
            if s.init in self.checkpoints and self.checkpoints[s.init].role == "published":
                pass  # training from another group's checkpoint is allowed; smoke reports it as needed
        # stage init chains must be acyclic
        for s in self.stages:
            seen, cur = [s.id], s
            while cur.init in by_id:
                cur = by_id[cur.init]
                if cur.id in seen:
                    raise ValueError(f"stage {s.id}: init chain has a cycle {seen + [cur.id]}")
                seen.append(cur.id)
        for t in self.tables:
            for r in t.rows:
                if r.model is None:
                    continue
                where = f"{t.id}: row {r.key}"
                if r.model.hub is not None:
                    model_ref(f"{where}: model.hub", r.model.hub)
                    if r.model.hub in by_id:
                        raise ValueError(f"{where}: model.hub {r.model.hub!r} is a stage id; use `stages:`")
                for i, sid in enumerate(r.model.stages):
                    if sid not in by_id:
                        raise ValueError(f"{where}: unknown stage {sid!r} (stages: {ids})")
                    if i > 0 and by_id[sid].init != r.model.stages[i - 1]:
                        raise ValueError(f"{where}: stage {sid!r} starts from {by_id[sid].init!r}, "
                                         f"not from the previous stage {r.model.stages[i - 1]!r}")
                if r.model.stages and by_id[r.model.stages[0]].init in by_id:
                    raise ValueError(f"{where}: the chain must start at a stage initialised from a hub "
                                     f"checkpoint; {r.model.stages[0]!r} starts from stage "
                                     f"{by_id[r.model.stages[0]].init!r}")

        if self.scale is not None:
            for method in self.scale.per_method:
                if method not in {st.method for st in self.stages}:
                    raise ValueError(f"scale.per_method: no stage uses method {method!r}")

    def stage(self, stage_id: str) -> Stage:
        for s in self.stages:
            if s.id == stage_id:
                return s
        raise UnknownNameError(f"{self.paper}: no stage {stage_id!r} (stages: {[s.id for s in self.stages]})")

    def table(self, table_id: str) -> TableRecipe:
        for t in self.tables:
            if t.id == table_id:
                return t
        raise UnknownNameError(f"{self.paper}: no recipe for table {table_id!r} (tables: {[t.id for t in self.tables]})")

    def eval_settings(self, profile: str) -> EvalSettings:
        if profile in self.evaluation:
            return self.evaluation[profile]
        return EvalSettings(source="smoke", max_new_tokens=16) if profile == "smoke" else EvalSettings()

    def methods(self) -> set[str]:
        return {s.method for s in self.stages}


def list_recipes(directory: Path = PAPERS_DIR) -> list[str]:
    return sorted(p.stem for p in Path(directory).glob("*.yaml"))


def load_recipe_file(path: Path | str) -> Recipe:
    return load_paper_yaml(Recipe, path)


def load_recipe(paper: str, directory: Path = PAPERS_DIR) -> Recipe:
    return load_recipe_file(find_paper_yaml(paper, directory, "recipe"))


def check_recipe(recipe: Recipe, published: Any, methods: Optional[dict[str, Any]] = None) -> list[str]:
    """Problems between a recipe, its paper's published tables and the method registry.

    Every results table of the paper needs a recipe table; every recipe row/column must exist in
    the published table and vice versa, and a column evaluates the benchmark (or one of the family,
    ``mathverse_vo`` of ``mathverse``) the published table names for it, if it names one; derived rows/columns must be derived there too; every
    method named must exist in ``methods`` (``methods.registry.METHODS``) when given.
    """
    problems: list[str] = []
    published_results = {t.id: t for t in published.tables if t.kind == "results"}
    for tid in published_results:
        if tid not in {t.id for t in recipe.tables}:
            problems.append(f"{recipe.paper}: published results table {tid} has no recipe")
    for t in recipe.tables:
        pub = published_results.get(t.id)
        if pub is None:
            problems.append(f"{recipe.paper}: recipe table {t.id} is not a published results table "
                            f"(published: {sorted(published_results)})")
            continue
        pcols = {c.key: c for c in pub.columns}
        rcols = {c.key: c for c in t.columns}
        derived_cols = {a.column for a in pub.all_averages()} | {c.key for c in pub.columns if c.delta}
        for k in pcols.keys() - rcols.keys():
            problems.append(f"{recipe.paper} {t.id}: published column {k} has no recipe column")
        for k in rcols.keys() - pcols.keys():
            problems.append(f"{recipe.paper} {t.id}: recipe column {k} is not in the published table")
        for k in rcols.keys() & pcols.keys():
            pb, rb = pcols[k].benchmark, rcols[k].benchmark
            if pb and rb and rb != pb and not rb.startswith(pb + "_"):  # mathverse_vo is of family mathverse
                problems.append(f"{recipe.paper} {t.id}: column {k}: the recipe evaluates {rb} "
                                f"but the published table names {pb}")
            if rcols[k].derived != (k in derived_cols):
                problems.append(f"{recipe.paper} {t.id}: column {k}: derived is {rcols[k].derived} in the "
                                f"recipe but the published table {'derives' if k in derived_cols else 'prints'} it")
        prows = {(r.group, r.key): r for r in pub.rows}
        rrows = {(r.group, r.key): r for r in t.rows}
        for g, k in prows.keys() - rrows.keys():
            problems.append(f"{recipe.paper} {t.id}: published row {g + '/' if g else ''}{k} has no recipe row")
        for g, k in rrows.keys() - prows.keys():
            problems.append(f"{recipe.paper} {t.id}: recipe row {g + '/' if g else ''}{k} is not in the published table")
        for gk in rrows.keys() & prows.keys():
            if rrows[gk].derived != (prows[gk].delta is not None):
                problems.append(f"{recipe.paper} {t.id}: row {gk[1]}: derived is {rrows[gk].derived} in the "
                                f"recipe but not in the published table" if rrows[gk].derived else
                                f"{recipe.paper} {t.id}: row {gk[1]} is a delta row in the published table: "
                                f"mark it `derived: true`")
    if methods is not None:
        for s in recipe.stages:
            if s.method not in methods:
                problems.append(f"{recipe.paper}: stage {s.id}: method {s.method!r} is not in "
                                f"methods.registry.METHODS ({sorted(methods)})")
    return problems


__all__ = ["Checkpoint", "ColumnRecipe", "EvalSettings", "MEMORY_SECTIONS", "ModelSpec", "PAPERS_DIR", "PROFILES",
           "PerProfile", "Recipe", "RowRecipe", "SCALING_METRICS", "ScalingRecipe", "Stage", "TableRecipe", "check_recipe", "eval_key", "list_recipes", "load_recipe",
           "load_recipe_file"]
