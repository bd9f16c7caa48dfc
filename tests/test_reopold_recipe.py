"""REOPOLD's recipe (reproduce/papers/reopold.yaml): every stage resolves to a valid config of its
method in both profiles, the Reopold stages state Table 7's column, Table 5's stages switch the
components as the published check marks say, every harness-trained row of Tables 1-6 and 8 is
runnable in smoke; Table 1 runs end to end with a resume (slow); the other tables run end to end
under the ``full`` marker (CI skips)."""
from __future__ import annotations

import json

import pytest

from methods.registry import load_method_config
from reproduce.plan import RUNNABLE, build_plan
from reproduce.published import load_published
from reproduce.recipes import load_recipe

TABLES = ("table1", "table2", "table3", "table4", "table5", "table6", "table8")
CONFIGS = {"reopold": ("methods.reopold.config", "REOPOLDConfig"), "opd": ("methods.opd.config", "OPDConfig"),
           "grpo": ("methods.grpo.config", "GRPOConfig"), "sft": ("methods.sft.config", "SFTConfig")}


def _plan(profile: str):
    return build_plan(load_recipe("reopold"), list(TABLES), profile)


def _resolve(stage, profile: str):
    import importlib

    module, cls = CONFIGS[stage.method]
    mod = importlib.import_module(module)
    ref = lambda src: next(iter(src.values())) if "hub" in src else (  # noqa: E731
        f"smoke:{src['smoke']}" if "smoke" in src else "/tmp/stage-output")
    overrides = dict(stage.overrides, model=ref(stage.init))
    if stage.teacher:
        overrides["teacher"] = ref(stage.teacher)
    if stage.data:
        overrides["data"] = stage.data
    return load_method_config(getattr(mod, cls), mod.PROFILES, profile, overrides=overrides)


@pytest.mark.parametrize("profile", ["smoke", "paper"])
def test_every_stage_resolves_to_a_valid_config(profile):
    plan = _plan(profile)
    assert plan.stages
    for stage in plan.stages.values():
        cfg = _resolve(stage, profile)
        assert cfg.steps >= 1, stage.id


# stage id prefix -> Table 7 column (PAPER_SETTINGS key); 300-step runs: the visual column with T_switch = K/3 [A]
def _setting(stage_id: str) -> str:
    return "math-1.5b" if stage_id.startswith("math_") else "tool" if stage_id.startswith("tool_") else "visual"


def test_reopold_stages_state_table7_in_the_paper_profile():
    from methods.reopold.config import TABLE7

    stages = [s for s in _plan("paper").stages.values() if s.method == "reopold"]
    assert len(stages) >= 10
    for s in stages:
        cfg = _resolve(s, "paper")
        want = dict(TABLE7[_setting(s.id)])
        if s.id.endswith("_300"):
            want.update(steps=300, t_switch=100)
        for field, value in want.items():
            assert getattr(cfg, field) == pytest.approx(value), (s.id, field)
        assert cfg.temperature == 1.0 and cfg.lr_schedule == "constant"


def test_table5_stages_switch_the_components_as_published():
    pub = {(r.group, r.key): r.attributes for r in load_published("reopold").table("table5").rows}
    recipe = load_recipe("reopold")
    plan = build_plan(recipe, ["table5"], "paper")
    names = {"stop_gradient": "stop_grad", "reward_clipping": "reward_clip",
             "token_dynamic_sampling": "entropy_sampling", "multi_stage": "multistage"}
    for row in plan.tables["table5"].rows:
        model = plan.models[row.model]
        stage = plan.stages[model.source["stage"]]
        cfg = _resolve(stage, "paper")
        if stage.method == "opd":  # the RKL row: J_RKL, gradient through R
            assert cfg.loss == "rkl-sampled" and not any(pub[(row.group, row.key)].values())
            continue
        for published, field in names.items():
            assert getattr(cfg, field) == pub[(row.group, row.key)][published], (row.key, field)


MISSING = {"grpo numbers quoted from NoisyRollout's paper (dagger); no released checkpoint"}
GRPO_TOOL = "VerlTool/pixel-reaoner-3b-grpo-n8-b128-t1.0-lr1e-6-complex-reward_global_step_100"


def _published_hub(recipe, model) -> bool:
    """A row evaluating another group's released checkpoint (no smoke stand-in): in smoke it is
    reported as needing the paper profile."""
    hub = model.source.get("hub")
    return hub is not None and recipe.checkpoints[hub].role == "published"


def test_every_harness_trained_row_is_runnable_in_smoke():
    plan, recipe = _plan("smoke"), load_recipe("reopold")
    for tid in TABLES:
        for row in plan.tables[tid].rows:
            if row.derived:
                continue
            model = plan.models[row.model]
            if "missing" in model.source:
                assert row.label in MISSING, (tid, row.key)
                continue
            if _published_hub(recipe, model):  # another group's released checkpoint
                assert row.status.startswith("needs "), row
                continue
            assert row.status == RUNNABLE, (tid, row.key, row.status)
    # GKD (full vocabulary) is trained here; the paper ran out of memory
    gkd = next(r for r in plan.tables["table8"].rows if r.key == "gkd")
    assert plan.stages[plan.models[gkd.model].source["stage"]].overrides["loss"] == "jsd"
    # the dagger variants (App. D, Top-5 approximation) are trained too
    by_key = {r.key: plan.stages[plan.models[r.model].source["stage"]] for r in plan.tables["table8"].rows}
    assert by_key["gkd_top5"].method == "opd" and by_key["gkd_top5"].overrides["loss"] == "topk-jsd"
    assert by_key["gkd_top5"].overrides["top_k"] == 5
    assert by_key["reopold_top5"].method == "reopold" and by_key["reopold_top5"].overrides["top_k"] == 5
    assert "top_k" not in by_key["reopold"].overrides


def test_paper_dry_run_prints_the_published_recipe(capsys):
    from reproduce.cli import main

    assert main(["table1", "--paper", "reopold", "--profile", "paper", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B" in out and "Skywork/Skywork-OR1-Math-7B" in out
    assert '"t_switch": 100' in out and '"lr": 1e-05' in out


def test_table6_smoke_trains_a_tool_using_warm_start_and_evaluates_with_tools():
    """Smoke: the warm start is a smoke-only SFT stage on scripted tool-use traces; RKL and Reopold
    start from it; the "+ SFT" row evaluates it; every column is a multi-turn tool evaluation (capped
    at 2 rounds in smoke, labelled); the GRPO row is VerlTool's released checkpoint."""
    plan = build_plan(load_recipe("reopold"), ["table6"], "smoke")
    rows = {r.key: r for r in plan.tables["table6"].rows}
    sft = next(s for s in plan.stages.values() if s.id == "tool_sft_smoke")
    assert sft.method == "sft" and sft.data == "smoke-tool-traces" and sft.init == {"smoke": "qwen2_5_vl"}
    for key in ("rkl", "reopold"):
        stage = plan.stages[plan.models[rows[key].model].source["stage"]]
        assert stage.init == {"stage": sft.dir}, key
        assert stage.overrides["tools"] == ["crop_image"] and stage.overrides["max_new_tokens"] == 64
        assert plan.models[rows[key].model].stages[0] == sft.dir
    warm = plan.models[rows["qwen2_5_vl_3b_sft"].model]
    assert warm.source == {"stage": sft.dir} and rows["qwen2_5_vl_3b_sft"].status == RUNNABLE
    assert "tool_sft_smoke (smoke stand-in for TIGER-Lab/PixelReasoner-WarmStart" in rows["qwen2_5_vl_3b_sft"].label
    assert plan.models[rows["grpo"].model].source == {"hub": GRPO_TOOL}
    assert rows["grpo"].status.startswith("needs " + GRPO_TOOL)
    evals = plan.evals_for("table6")
    assert evals and all(e.tool_rounds == 2 and e.eval_key.endswith("-tools2") for e in evals)
    assert all(set(e.benchmarks) == {"pixel_reasoner", "vstar", "infovqa", "tallyqa"} for e in evals)
    assert all("at most 2 tool round(s), not 5" in r.label for r in rows.values() if not r.derived)
    assert plan.eval_settings["tool_max_new_tokens"] == 64


def test_table6_paper_profile_starts_from_the_hub_warm_start(capsys):
    from reproduce.cli import main

    plan = build_plan(load_recipe("reopold"), ["table6"], "paper")
    assert not any(s.id == "tool_sft_smoke" for s in plan.stages.values())
    rows = {r.key: r for r in plan.tables["table6"].rows}
    assert plan.models[rows["qwen2_5_vl_3b_sft"].model].source == {"hub": "TIGER-Lab/PixelReasoner-WarmStart"}
    assert plan.models[rows["grpo"].model].source == {"hub": GRPO_TOOL} and rows["grpo"].status == RUNNABLE
    assert all(e.tool_rounds == 5 for e in plan.evals_for("table6"))
    assert main(["table6", "--paper", "reopold", "--profile", "paper", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("from hub TIGER-Lab/PixelReasoner-WarmStart, teacher TIGER-Lab/PixelReasoner-RL-v1") == 2
    assert "tool_sft_smoke" not in out and "at most 5 tool round(s)" in out and GRPO_TOOL in out


@pytest.mark.slow
def test_reopold_table1_smoke_end_to_end_and_resume(tmp_path):
    from reproduce import run_table

    out = tmp_path / "run"
    published = load_published("reopold")
    res = run_table("reopold", "table1", "smoke", out)
    rep = res["report"]
    assert rep["smoke"]
    n_rows, n_cols = len(published.table("table1").rows), len(published.table("table1").columns)
    assert len(rep["cells"]) == n_rows * n_cols
    # every row the harness trains (and every stand-in) is measured; only derived rows may be empty
    for c in rep["cells"]:
        derived = c["row"] == "reopold_vs_rkl"
        assert derived or (c["measured"] is not None and c["status"] != "not run"), c
    assert {r["status"] for r in rep["rows"]} == {"run", "derived row"}
    state = json.loads((out / "state.json").read_text())
    assert state["stages"] and all(s["status"] == "done" for s in state["stages"].values())
    mtimes = {p: p.stat().st_mtime for p in (out / "stages").rglob("COMPLETE")}
    again = run_table("reopold", "table1", "smoke", out)  # resume: nothing retrained or re-evaluated
    assert [c["measured"] for c in again["report"]["cells"]] == [c["measured"] for c in rep["cells"]]
    assert {p: p.stat().st_mtime for p in (out / "stages").rglob("COMPLETE")} == mtimes


@pytest.mark.full
@pytest.mark.parametrize("table", [t for t in TABLES if t != "table1"])
def test_reopold_other_tables_smoke_end_to_end(table, tmp_path):
    from reproduce import run_table

    rep = run_table("reopold", table, "smoke", tmp_path / "run")["report"]
    plan = build_plan(load_recipe("reopold"), [table], "smoke")
    planned = plan.tables[table].rows
    missing = {(r.group, r.key) for r in planned if r.label in MISSING}
    needs = {(r.group, r.key) for r in planned if not r.derived and _published_hub(load_recipe("reopold"),
                                                                                   plan.models[r.model])}
    for row in rep["rows"]:
        if (row["group"], row["key"]) in missing:
            assert row["status"].startswith("not implemented"), row
        elif (row["group"], row["key"]) in needs:
            assert row["status"].startswith("needs "), row
        else:
            assert row["status"] in ("run", "derived row"), row
    measured = {(c["row"], c["column"]) for c in rep["cells"] if c["measured"] is not None}
    for r in planned:  # every harness-trained row (and stand-in) has every evaluated column measured
        if not r.derived and (r.group, r.key) not in missing | needs:
            assert all((r.key, col) in measured for col in r.evals), (r.key, sorted(measured))


def test_smoke_caps_avg_at_32_columns_to_avg_at_4_and_labels_the_rows():
    """Smoke evaluates Table 1's Avg@32 columns with 4 draws (``max_sample_k``), says so in each row's
    label, and the paper profile keeps k = 32 and the plain label."""
    smoke, paper = _plan("smoke"), _plan("paper")
    ks = {e.k for e in smoke.evals.values() if e.mode == "sample" and "aime24" in e.benchmarks}
    assert ks == {4}
    assert {e.k for e in paper.evals.values() if e.mode == "sample" and "aime24" in e.benchmarks} == {32}
    for row in smoke.tables["table1"].rows:
        if not row.derived and row.status in RUNNABLE:
            assert "Avg@4, not Avg@32, on aime24, aime25, amc23" in row.label
    assert not any("Avg@4" in (r.label or "") for r in paper.tables["table1"].rows)
