"""The papers' published tables, as data: schema, loader, look-ups and consistency checks.

One YAML file a paper lives in ``results/published/<paper>.yaml``. Loading goes through
:func:`harness.config.from_dict`, so an unknown key or a wrong type is a ``ConfigError`` that
names the file and the dotted key (``results/published/vold.yaml: tables[2].rows[4].values: ...``).

File layout (every key below; anything else is an error)::

    paper: vold                      # short name, equal to the file's stem
    title: "..."
    source: "results/published/sources/vold.txt (...)"   # verbatim excerpts the cells come from
    notes: ["..."]                   # paper-level provenance notes (optional)
    tables:
      - id: table1                   # "Table 1" -> table1, "Table A1" -> table_a1; unique in the file
        kind: results                # results | hyperparameters
        caption: "..."               # the printed caption (shortened only where marked "...")
        metric: accuracy_pct         # default metric of every cell (a row may override it)
        columns:
          - key: mathvista           # a benchmark key of evals.benchmarks where the column is one
            label: MathVista         # header as printed
            benchmark: mathvista     # optional: which benchmark a sub-metric column belongs to
            metric: worst_case       # optional: which sub-metric (e.g. vision_only, acc@16)
            delta: {kind: relative_pct, of: avg, baseline_row: grpo}   # optional, derived column
            note: "..."
        rows:
          - key: grpo                # snake_case; unique within (group, key)
            label: "+ GRPO"          # as printed
            group: qwen2_5_vl_3b     # the section label (student size, teacher, ...); "" if none
            metric: acc@16           # optional: overrides the table's metric for this row
            attributes: {rl: true}   # optional: descriptive non-score cells (check marks, ...)
            delta: {kind: difference, of: vgs, over: standard_opd}   # optional, derived row
            values: {mathvista: 61.2, avg: null}   # one entry for EVERY column: number or null
            note: "..."              # every judgement call made while transcribing this row
        average:  {column: avg, of: [mathvista, ...], tolerance: 0.051, note: ""}  # optional
        averages: [ {column: ..., of: [...]} , ...]   # optional, more printed averages
        protocol: {decoding: greedy, k: 1, judge: "llm:gpt-4o-mini", framework: VLMEvalKit,
                   source: "§4.1 ..."}   # optional: how the cells were evaluated (see Protocol)
        notes: ["..."]

A column and a row may carry ``protocol`` too: its stated fields override the table's (a column's
benchmark subset, a row's Acc@16 decoding). A field left out is "not stated by the paper".

Values are numbers as printed (percent for accuracies), ``null`` where the paper prints "-",
"OOM" or the extraction lost the number (the row's note says which). In ``hyperparameters``
tables a value may also be a string ("AdamW", "Cosine").

Derived cells are data too: a ``delta`` row holds what the paper printed for the difference
(``difference``: of - over) or relative gain (``relative_pct``: 100 * (of / over - 1)) of two other
rows of the same group; a ``delta`` column holds the same for one column against a baseline row of
the same group. :func:`check_averages` and :func:`check_deltas` recompute them and return the
cells where the paper's own printed number disagrees; nothing is corrected in the data.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, TypeVar, Union

from harness.config import ConfigError, load_config
from harness.errors import UnknownNameError

T = TypeVar("T")

PUBLISHED_DIR = Path(__file__).resolve().parent.parent / "results" / "published"
DEFAULT_TOLERANCE = 0.051
"""Printed averages are rounded to 2 decimals from inputs rounded to 2 decimals: the recomputed
mean can differ by at most 0.005 + 0.005; 0.051 also covers 1-decimal averages of 2-decimal inputs.
Tables printed with 1 decimal everywhere set ``tolerance`` themselves (0.1 = 0.05 + 0.05)."""

_KEY = re.compile(r"^[a-z0-9][a-z0-9_]*$")
_TABLE_ID = re.compile(r"^table(\d+[a-z]?|_[a-z]\d+[a-z]?)$")

Value = Union[int, float, str, None]


@dataclass
class RowDelta:
    """The row is derived: ``difference`` = of - over, ``relative_pct`` = 100*(of/over - 1)."""
    kind: Literal["difference", "relative_pct"]
    of: str
    over: str
    tolerance: float = DEFAULT_TOLERANCE


@dataclass
class ColumnDelta:
    """The column is derived from column ``of`` against row ``baseline_row`` of the same group."""
    kind: Literal["difference", "relative_pct"]
    of: str
    baseline_row: str
    tolerance: float = DEFAULT_TOLERANCE


@dataclass
class Average:
    """Column ``column`` is printed as the mean of columns ``of``."""
    column: str
    of: list[str]
    tolerance: float = DEFAULT_TOLERANCE
    note: str = ""


@dataclass
class Protocol:
    """How the paper evaluated a cell; None = not stated. ``source`` cites where each stated field
    comes from (section, table, footnote), so that every protocol fact can be checked."""
    decoding: Optional[Literal["greedy", "sample"]] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    k: Optional[int] = None
    """Samples per question whose accuracy is averaged (Acc@k / Avg@k); 1 for a single answer."""
    judge: Optional[str] = None
    """``rule`` (rule-based answer matching) or ``llm:<model>`` (an LLM extracts / judges the answer)."""
    framework: Optional[str] = None
    """The evaluation code (VLMEvalKit, the NoisyRollout protocol, the PAPO suite, ...)."""
    subset: Optional[str] = None
    """Benchmark version / split / subset as evaluated (testmini, multiple-choice only, ...)."""
    max_new_tokens: Optional[int] = None
    source: str = ""

    FIELDS = ("decoding", "temperature", "top_p", "k", "judge", "framework", "subset", "max_new_tokens")

    def over(self, base: Optional["Protocol"]) -> "Protocol":
        """This protocol's stated fields on top of ``base``'s; sources are joined."""
        if base is None:
            return self
        merged = {f: getattr(self, f) if getattr(self, f) is not None else getattr(base, f) for f in self.FIELDS}
        src = "; ".join(s for s in (base.source, self.source) if s)
        return Protocol(**merged, source=src)


@dataclass
class Column:
    key: str
    label: str
    benchmark: Optional[str] = None
    metric: Optional[str] = None
    delta: Optional[ColumnDelta] = None
    protocol: Optional[Protocol] = None
    note: str = ""


@dataclass
class Row:
    key: str
    label: str
    values: dict[str, Value]
    group: str = ""
    metric: Optional[str] = None
    attributes: dict[str, Union[bool, str, None]] = field(default_factory=dict)
    delta: Optional[RowDelta] = None
    protocol: Optional[Protocol] = None
    note: str = ""


@dataclass
class Table:
    id: str
    kind: Literal["results", "hyperparameters"]
    caption: str
    columns: list[Column]
    rows: list[Row]
    metric: str = ""
    average: Optional[Average] = None
    averages: list[Average] = field(default_factory=list)
    protocol: Optional[Protocol] = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not _TABLE_ID.match(self.id):
            raise ValueError(f"table id {self.id!r}: expected table<N> or table_<letter><N>")
        ckeys = [c.key for c in self.columns]
        for k in ckeys:
            if not _KEY.match(k):
                raise ValueError(f"{self.id}: column key {k!r} is not snake_case")
        if len(set(ckeys)) != len(ckeys):
            raise ValueError(f"{self.id}: duplicate column keys {sorted({k for k in ckeys if ckeys.count(k) > 1})}")
        seen: set[tuple[str, str]] = set()
        for r in self.rows:
            where = f"{self.id}: row {r.group + '/' if r.group else ''}{r.key}"
            if not _KEY.match(r.key):
                raise ValueError(f"{where}: row key is not snake_case")
            if (r.group, r.key) in seen:
                raise ValueError(f"{where}: duplicate row (group, key)")
            seen.add((r.group, r.key))
            missing = [k for k in ckeys if k not in r.values]
            extra = [k for k in r.values if k not in ckeys]
            if missing:
                raise ValueError(f"{where}: no value for column {missing[0]!r} (write null if the paper has none)")
            if extra:
                raise ValueError(f"{where}: value for unknown column {extra[0]!r} (columns: {ckeys})")
            if self.kind == "results":
                bad = [k for k, v in r.values.items() if isinstance(v, str)]
                if bad:
                    raise ValueError(f"{where}: column {bad[0]!r}: results cells are numbers or null, got a string")
        for r in self.rows:
            if r.delta is not None:
                for ref in (r.delta.of, r.delta.over):
                    if (r.group, ref) not in seen:
                        raise ValueError(f"{self.id}: row {r.key}: delta refers to unknown row {ref!r} in group {r.group!r}")
        for c in self.columns:
            if c.delta is not None:
                if c.delta.of not in ckeys:
                    raise ValueError(f"{self.id}: column {c.key}: delta refers to unknown column {c.delta.of!r}")
                for g in dict.fromkeys(r.group for r in self.rows):
                    if (g, c.delta.baseline_row) not in seen:
                        raise ValueError(f"{self.id}: column {c.key}: group {g!r} has no baseline row "
                                         f"{c.delta.baseline_row!r}")
        for avg in self.all_averages():
            for k in [avg.column, *avg.of]:
                if k not in ckeys:
                    raise ValueError(f"{self.id}: average refers to unknown column {k!r}")

    def all_averages(self) -> list[Average]:
        return ([self.average] if self.average else []) + list(self.averages)

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(r.group for r in self.rows))

    def column(self, key: str) -> Column:
        for c in self.columns:
            if c.key == key:
                return c
        raise UnknownNameError(f"{self.id}: no column {key!r} (columns: {[c.key for c in self.columns]})")

    def row(self, key: str, group: Optional[str] = None) -> Row:
        found = [r for r in self.rows if r.key == key and (group is None or r.group == group)]
        if len(found) == 1:
            return found[0]
        if not found:
            known = sorted({f"{r.group}/{r.key}" if r.group else r.key for r in self.rows})
            raise UnknownNameError(f"{self.id}: no row {key!r}{f' in group {group!r}' if group else ''} (rows: {known})")
        raise UnknownNameError(f"{self.id}: row {key!r} is in several groups {[r.group for r in found]}: pass group=")

    def cell(self, row: str, column: str, group: Optional[str] = None) -> Value:
        self.column(column)
        return self.row(row, group).values[column]

    def protocol_of(self, row: Row, column: Column) -> Protocol:
        """The evaluation protocol of one cell: the table's, then the column's, then the row's fields."""
        p = self.protocol or Protocol()
        for extra in (column.protocol, row.protocol):
            if extra is not None:
                p = extra.over(p)
        return p

    def result_rows(self) -> list[Row]:
        """Rows that are measurements (not derived delta rows)."""
        return [r for r in self.rows if r.delta is None]


@dataclass
class PublishedPaper:
    paper: str
    title: str
    source: str
    tables: list[Table]
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        ids = [t.id for t in self.tables]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate table ids {dup}")

    def table(self, table_id: str) -> Table:
        for t in self.tables:
            if t.id == table_id:
                return t
        raise UnknownNameError(f"{self.paper}: no table {table_id!r} (tables: {[t.id for t in self.tables]})")

    def results_tables(self) -> list[Table]:
        return [t for t in self.tables if t.kind == "results"]


def list_papers(directory: Path = PUBLISHED_DIR) -> list[str]:
    """Short names of the papers with a published-tables file."""
    return sorted(p.stem for p in Path(directory).glob("*.yaml"))


def load_paper_yaml(cls: type[T], path: Path | str) -> T:
    """Load and validate a per-paper YAML file (``<paper>.yaml``, published tables or a recipe)
    into ``cls``; errors name the file and the key, and the ``paper`` key must match the name."""
    path = Path(path)
    obj = load_config(cls, path)
    if obj.paper != path.stem:
        raise ConfigError(f"{path}: paper: {obj.paper!r} differs from the file name {path.stem!r}")
    return obj


def find_paper_yaml(paper: str, directory: Path | str, what: str) -> Path:
    """``directory/<paper>.yaml``, or a KeyError listing the papers that have one."""
    path = Path(directory) / f"{paper}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in Path(directory).glob("*.yaml"))
        raise UnknownNameError(f"no {what} for paper {paper!r} (known: {known})")
    return path


def load_published_file(path: Path | str) -> PublishedPaper:
    """Load and validate one file; errors name the file and the key."""
    return load_paper_yaml(PublishedPaper, path)


def load_published(paper: str, directory: Path = PUBLISHED_DIR) -> PublishedPaper:
    """The published tables of ``paper`` (``vold``, ``reopold``, ``vgs``, ``ptdpo``)."""
    return load_published_file(find_paper_yaml(paper, directory, "published tables"))


def get_table(paper: str, table_id: str, directory: Path = PUBLISHED_DIR) -> Table:
    return load_published(paper, directory).table(table_id)


@dataclass(frozen=True)
class Discrepancy:
    """A printed derived cell (average or delta) that differs from its recomputation."""
    table: str
    group: str
    row: str
    column: str
    printed: float
    recomputed: float
    rule: str

    @property
    def cell(self) -> tuple[str, str, str, str]:
        return (self.table, self.group, self.row, self.column)

    def __str__(self) -> str:
        g = f"{self.group}/" if self.group else ""
        return (f"{self.table} {g}{self.row} [{self.column}]: printed {self.printed:g}, "
                f"recomputed {self.recomputed:.3f} ({self.rule})")


def _num(v: Value) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def check_averages(table: Table) -> list[Discrepancy]:
    """Recompute every printed average; return the cells where it disagrees beyond tolerance.

    Rows whose average or any averaged input is null (lost in extraction, "-") are skipped:
    there is nothing to compare. Delta rows of kind ``difference`` are checked too (a mean of
    differences is the difference of the means); ``relative_pct`` rows are not (it is not).
    """
    out: list[Discrepancy] = []
    rows = [r for r in table.rows if r.delta is None or r.delta.kind == "difference"]
    for avg in table.all_averages():
        for r in rows:
            printed = _num(r.values[avg.column])
            inputs = [_num(r.values[k]) for k in avg.of]
            if printed is None or any(x is None for x in inputs):
                continue
            mean = sum(inputs) / len(inputs)  # type: ignore[arg-type]
            if abs(mean - printed) > avg.tolerance:
                out.append(Discrepancy(table.id, r.group, r.key, avg.column, printed, round(mean, 4),
                                       f"mean of {len(avg.of)} columns, tolerance {avg.tolerance}"))
    return out


def _derive(kind: str, a: float, b: float) -> Optional[float]:
    if kind == "difference":
        return a - b
    return None if b == 0 else 100.0 * (a / b - 1.0)


def check_deltas(table: Table) -> list[Discrepancy]:
    """Recompute every printed delta row and delta column; return the disagreeing cells."""
    out: list[Discrepancy] = []
    for r in table.rows:
        if r.delta is None:
            continue
        of, over = table.row(r.delta.of, r.group), table.row(r.delta.over, r.group)
        for c in table.columns:
            printed, a, b = _num(r.values[c.key]), _num(of.values[c.key]), _num(over.values[c.key])
            if printed is None or a is None or b is None:
                continue
            want = _derive(r.delta.kind, a, b)
            if want is not None and abs(want - printed) > r.delta.tolerance:
                out.append(Discrepancy(table.id, r.group, r.key, c.key, printed, round(want, 4),
                                       f"{r.delta.kind} {r.delta.of} vs {r.delta.over}, tolerance {r.delta.tolerance}"))
    for c in table.columns:
        if c.delta is None:
            continue
        for r in table.result_rows():
            printed = _num(r.values[c.key])
            if printed is None:
                continue
            base = table.row(c.delta.baseline_row, r.group)
            a, b = _num(r.values[c.delta.of]), _num(base.values[c.delta.of])
            if a is None or b is None:
                continue
            want = _derive(c.delta.kind, a, b)
            if want is not None and abs(want - printed) > c.delta.tolerance:
                out.append(Discrepancy(table.id, r.group, r.key, c.key, printed, round(want, 4),
                                       f"{c.delta.kind} of {c.delta.of} vs row {c.delta.baseline_row}, "
                                       f"tolerance {c.delta.tolerance}"))
    return out


__all__ = [
    "PUBLISHED_DIR", "Average", "Column", "ColumnDelta", "Discrepancy", "Protocol", "PublishedPaper", "Row",
    "RowDelta", "Table", "check_averages", "check_deltas", "get_table", "list_papers",
    "load_published", "load_published_file",
]
