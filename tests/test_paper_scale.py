"""The paper profile's scale: vLLM as its engine, and each recipe's published hardware and strategy
(``scale:``, reproduce.recipes.PaperScale) written into its paper-profile training stages."""
from __future__ import annotations

import dataclasses

import pytest

from harness.config import ConfigError, from_dict
from methods.registry import METHODS, load_method_config
from reproduce.plan import build_plan
from reproduce.recipes import PaperScale, Recipe, load_recipe

PAPERS = ["vold", "reopold", "vgs", "ptdpo"]

ONLINE = [("grpo", "GRPOConfig", "PROFILES"), ("opd", "OPDConfig", "PROFILES"), ("reopold", "REOPOLDConfig", "PROFILES"),
          ("ptdpo", "PTDPOConfig", "PROFILES"), ("vgs", "VGSConfig", "PROFILES"),
          ("vgs", "TeacherGRPOConfig", "TEACHER_PROFILES")]


@pytest.mark.parametrize("package,cls,profiles", ONLINE)
def test_online_methods_roll_out_with_vllm_in_the_paper_profile_and_hf_in_smoke(package, cls, profiles):
    import importlib

    mod = importlib.import_module(f"methods.{package}.config")
    needed = {"model": "M", "data": "D", "teacher": "T"}
    fields = {f.name for f in dataclasses.fields(getattr(mod, cls))}
    ov = {k: v for k, v in needed.items() if k in fields}
    paper = load_method_config(getattr(mod, cls), getattr(mod, profiles), "paper", None, ov)
    smoke = load_method_config(getattr(mod, cls), getattr(mod, profiles), "smoke")
    assert (paper.rollout_engine, paper.vllm.sleep_mode) == ("vllm", True)
    assert smoke.rollout_engine == "hf"


def test_vold_traces_use_vllm_in_the_paper_profile_also_inside_the_sft_stage():
    from methods.vold import load_stage_config

    assert load_stage_config("traces", "paper", {}).engine == "vllm"
    assert load_stage_config("sft", "paper", {}).traces.engine == "vllm"
    assert load_stage_config("traces", "smoke", {}).engine == "hf"
    assert load_stage_config("rl", "paper", {}).rollout_engine == "vllm"


@pytest.mark.parametrize("paper", PAPERS)
def test_every_recipe_states_its_hardware_and_its_paper_stages_use_its_strategy(paper):
    recipe = load_recipe(paper)
    assert recipe.scale is not None and recipe.scale.hardware
    tables = [t.id for t in recipe.tables]
    plan = build_plan(recipe, tables, "paper")
    smoke = build_plan(recipe, tables, "smoke")
    own = {s.id: s.paper.get("distributed") for s in recipe.stages}
    for st in plan.stages.values():
        if not METHODS[st.method].trains:
            assert "distributed" not in st.overrides, st.id
            continue
        expected = own[st.id] or recipe.scale.strategy_for(st.method)
        assert st.overrides["distributed"] == expected, st.id
    assert all("distributed" not in st.overrides for st in smoke.stages.values())


def test_a_stages_own_strategy_and_per_method_win_over_the_recipes():
    recipe = load_recipe("vgs")
    assert recipe.scale.per_method == {"vgs": "ddp"}
    plan = build_plan(recipe, ["table1"], "paper")
    by_method = {st.method: st.overrides["distributed"] for st in plan.stages.values()}
    assert by_method["vgs"] == "ddp" and by_method["vgs_teacher"] == "zero3"
    stage = next(s for s in recipe.stages if s.method == "vgs")
    stage.paper["distributed"] = "fsdp"
    plan = build_plan(recipe, ["table1"], "paper")
    assert next(st for st in plan.stages.values() if st.id == stage.id).overrides["distributed"] == "fsdp"


def test_scale_mistakes_are_one_line_errors():
    recipe = load_recipe("reopold")
    data = {"paper": "x", "tables": [], "scale": {"hardware": "8 H100", "distributed": "deepspeed"}}
    with pytest.raises(ConfigError, match="scale.distributed"):
        from_dict(Recipe, data, source="x.yaml")
    with pytest.raises(ValueError, match="nproc_per_node"):
        PaperScale(hardware="8 H100", nproc_per_node=0)
    with pytest.raises(ValueError, match="no stage uses method 'vgs'"):
        dataclasses.replace(recipe, scale=PaperScale(hardware="8 H100", per_method={"vgs": "ddp"}))
    assert PaperScale(hardware="h", nnodes=2).launch_flags() == \
        "--nproc-per-node 8 --nnodes 2 --node-rank R --master-addr HOST0"


def test_paper_evaluation_runs_vllm_in_bf16_with_most_of_the_gpu_and_smoke_is_unchanged():
    from reproduce.plan import PlannedEval
    from reproduce.runner import _generation_kwargs

    ev = PlannedEval.__new__(PlannedEval)
    ev.tool_rounds = 0
    for paper in PAPERS:
        recipe = load_recipe(paper)
        paper_kw = _generation_kwargs(dataclasses.asdict(recipe.eval_settings("paper")), ev)
        assert paper_kw["dtype"] == "bfloat16" and paper_kw["vllm"].gpu_memory_utilization == 0.9, paper
        smoke_kw = _generation_kwargs(dataclasses.asdict(recipe.eval_settings("smoke")), ev)
        assert not {"device", "dtype", "vllm"} & set(smoke_kw), paper


def test_a_bad_evaluation_vllm_key_is_a_one_line_error():
    from reproduce.recipes import EvalSettings

    with pytest.raises(ConfigError, match="evaluation.vllm.*gpu_memory"):
        EvalSettings(vllm={"gpu_memory": 0.9})
