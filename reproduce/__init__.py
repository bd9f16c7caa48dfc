"""Published tables -> runs -> evaluation -> diffs and reports.

``run_table(paper, table, profile, out)`` mirrors ``reproduce TABLE --paper P --profile X --out DIR``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Optional
from harness.errors import UnknownNameError


def default_out(paper: str, table: str, profile: str) -> Path:
    return Path("runs") / paper / f"{table}-{profile}"


def run_table(paper: str, table: str, profile: str = "smoke", out: Optional[str | Path] = None, *,
              rows: Optional[list[str]] = None, dry_run: bool = False, tolerance: Optional[float] = None,
              fail_fast: bool = False, methods: Optional[Mapping[str, Any]] = None,
              train_fn: Optional[Callable] = None, eval_fn: Optional[Callable] = None,
              smoke_path: Optional[Callable[[str], str]] = None,
              recipe_dir: Optional[Path] = None, published_dir: Optional[Path] = None,
              preflight: Optional[bool] = None, launch: Optional[Any] = None) -> dict[str, Any]:
    """Plan, train, evaluate, diff and report one table; returns ``{plan, plan_text, report, paths, markdown}``.

    Re-running with the same ``out`` resumes (finished stages and recorded samples are reused) and
    may add other tables of the same paper and profile to the directory. ``methods``, ``train_fn``,
    ``eval_fn``, ``smoke_path`` and the two directories replace the registry, trainers, evals.run,
    the tiny-model builder and the data files (tests). ``launch`` (a :class:`reproduce.launch.Launch`)
    trains each stage under torchrun on several processes / nodes; on a node other than the first
    the call returns after training (``report`` None).

    ``preflight`` (default: on in the paper profile) checks sources, GPUs, memory and disk first
    (``reproduce.preflight``) and raises :class:`~reproduce.preflight.PreflightError` listing
    every problem; the paper profile's ``--dry-run`` adds the per-GPU memory estimate.
    """
    from reproduce.diff import DEFAULT_TOLERANCE
    from reproduce.plan import Plan, build_plan, format_plan
    from reproduce.recipes import PAPERS_DIR, check_recipe, load_recipe
    from reproduce.report import build_report, to_markdown, write_reports
    from reproduce.runner import _smoke_path, execute

    from harness.run_dir import require_directory

    if out is not None:
        out = require_directory(out, "--out directory")
    recipe = load_recipe(paper, recipe_dir or PAPERS_DIR)
    from reproduce.published import PUBLISHED_DIR, load_published
    published = load_published(recipe.published, published_dir or PUBLISHED_DIR)
    if methods is None:
        from methods.registry import METHODS as methods  # noqa: N811
    elif train_fn is None:  # the given registry also supplies the trainers
        registry = methods

        def train_fn(name: str) -> Any:
            spec = registry[name]
            if spec.train is None:
                raise RuntimeError(f"method {name!r} has no trainer (implemented={spec.implemented})")
            return spec.train
    problems = check_recipe(recipe, published, methods)
    if problems:
        raise ValueError(f"recipe {paper} does not match its published tables / the method registry:\n  "
                         + "\n  ".join(problems))
    published.table(table)  # a clear error for an unknown table id
    if rows is not None:
        known = {r.key for r in recipe.table(table).rows} | {f"{r.group}/{r.key}" for r in recipe.table(table).rows}
        unknown = [r for r in rows if r not in known]
        if unknown:
            raise UnknownNameError(f"{paper} {table}: unknown rows {unknown} (rows: {sorted(known)})")
    plan = build_plan(recipe, [table], profile, methods)
    text = format_plan(plan, table, rows)
    if dry_run:
        if profile == "paper":
            from reproduce.preflight import memory_table, scale_text
            text += "\n\n" + scale_text(recipe.scale, paper, table) + "\n\n" + memory_table(plan, table, rows)
        return {"plan": plan, "plan_text": text}
    out = Path(out) if out is not None else default_out(paper, table, profile)
    if preflight if preflight is not None else profile == "paper":
        from reproduce.preflight import PreflightError, preflight as check
        problems = check(plan, table, out, rows, launch=launch)
        if problems:
            raise PreflightError("\n".join(problems))
    out.mkdir(parents=True, exist_ok=True)
    try:
        plan = Plan.load(out).merge(plan)
    except FileNotFoundError:
        pass
    plan.save(out)  # every node writes the same plan (atomically): the ranks of a stage read it
    execute(plan, table, out, rows=rows, train_fn=train_fn, eval_fn=eval_fn,
            smoke_path=smoke_path or _smoke_path, fail_fast=fail_fast, launch=launch)
    if launch is not None and not launch.is_main_node:
        return {"plan": plan, "plan_text": text, "report": None, "paths": {}, "markdown": ""}
    rep = build_report(out, table, tolerance=DEFAULT_TOLERANCE if tolerance is None else tolerance, rows=rows,
                       published_dir=published_dir)
    paths = write_reports(rep, out / "report")
    return {"plan": plan, "plan_text": text, "report": rep, "paths": paths, "markdown": to_markdown(rep)}


__all__ = ["default_out", "run_table"]
