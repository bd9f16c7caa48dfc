"""VGS configs: every value of the paper's Tables 3 (teacher GRPO) and 4 (distillation), as
transcribed in results/published/vgs.yaml, appears in the resolved paper-profile configs (the
method's own and the recipe's stages); bad settings fail with a one-line error."""
from __future__ import annotations

import math

import pytest
import torch

from harness.config import ConfigError
from harness.optim import build_optimizer
from methods.registry import load_method_config
from methods.vgs.config import PROFILES, TEACHER_PROFILES, TRAIN_ROWS, TeacherGRPOConfig, VGSConfig
from reproduce.published import load_published
from reproduce.recipes import load_recipe


def _bool(printed: str) -> bool:
    return {"True": True, "False": False}[printed]


def _optimizer_is(cfg, name: str) -> bool:
    opt = build_optimizer(torch.nn.Linear(2, 2), cfg.lr, cfg.weight_decay, (cfg.adam_beta1, cfg.adam_beta2), cfg.adam_eps)
    return type(opt).__name__ == name


# Table row key -> the resolved config's value for it.
COMMON = {
    "learning_rate": lambda c: c.lr,
    "weight_decay": lambda c: c.weight_decay,
    "lr_schedule": lambda c: c.lr_schedule.capitalize(),
    "epochs": lambda c: c.steps // math.ceil(TRAIN_ROWS / c.prompts_per_step),
    "freeze_vision_encoder": lambda c: str(c.freeze_vision),
    "rollout_temperature": lambda c: c.temperature,
    "rollout_top_p": lambda c: c.top_p,
    "max_prompt_length": lambda c: c.max_prompt_length,
    "max_response_length": lambda c: c.max_new_tokens,
}
TABLE3 = {**COMMON, "global_batch_size": lambda c: c.prompts_per_step // c.mini_batches_per_step,
          "rollout_batch_size": lambda c: c.prompts_per_step, "rollout_size": lambda c: c.num_generations,
          "use_kl_loss": lambda c: str(c.kl_coef > 0)}
TABLE4 = {**COMMON, "global_batch_size": lambda c: c.prompts_per_step * c.num_generations // c.mini_batches_per_step,
          "gamma": lambda c: c.gamma, "lambda_lp": lambda c: c.lambda_lp}


def _check(table_id: str, fields: dict, cfg, skip: tuple[str, ...] = ()) -> None:
    for row in load_published("vgs").table(table_id).rows:
        if row.key in skip:
            continue
        printed = row.values["value"]
        if row.key == "optimizer":
            assert _optimizer_is(cfg, printed), (table_id, row.key)
            continue
        assert row.key in fields, f"{table_id}: no config field checked for {row.key!r}"
        got = fields[row.key](cfg)
        assert got == printed or (isinstance(printed, float) and math.isclose(got, printed)), (table_id, row.key, got, printed)


def test_table3_values_in_the_teacher_config_and_recipe_stage():
    _check("table3", TABLE3, load_method_config(TeacherGRPOConfig, TEACHER_PROFILES, "paper", None, {}))
    stage = load_recipe("vgs").stage("teacher_grpo")
    _check("table3", TABLE3, load_method_config(TeacherGRPOConfig, TEACHER_PROFILES, "paper", None,
                                                dict(stage.overrides("paper"), model="M")))


@pytest.mark.parametrize("stage_id", [None, "vgs_2b", "vgs_4b", "opd_2b", "opd_4b", "adaptive_vgs_2b"])
def test_table4_values_in_the_distillation_configs(stage_id):
    ov = {"teacher": "T"}
    if stage_id is not None:
        stage = load_recipe("vgs").stage(stage_id)
        ov.update(stage.overrides("paper"), model="M")
    cfg = load_method_config(VGSConfig, PROFILES, "paper", None, ov)
    skip: tuple[str, ...] = ()
    if stage_id is not None and stage_id.startswith("opd"):  # the standard OPD baseline: gamma = lambda = 0
        assert (cfg.gamma, cfg.lambda_lp, cfg.eta_value) == (0.0, 0.0, 1.0)
        skip = ("gamma", "lambda_lp")
    _check("table4", TABLE4, cfg, skip)


def test_paper_eta_constants_and_alpha_in_the_recipe():
    recipe = load_recipe("vgs")
    resolve = lambda sid: load_method_config(VGSConfig, PROFILES, "paper", None,  # noqa: E731
                                             dict(recipe.stage(sid).overrides("paper"), model="M", teacher="T"))
    assert resolve("vgs_2b").eta_value == 0.41 and resolve("vgs_4b").eta_value == 0.36  # §5.2
    assert resolve("vgs_2b").lp_quantile == 0.7 and resolve("adaptive_vgs_2b").adaptive_gamma
    assert resolve("opd_2b").diag_gamma == 2.0 and resolve("opd_2b").diag_every > 0  # App. A's measurement
    for sid in ("grpo_opd_2b", "grpo_vgs_2b"):
        assert resolve(sid).alpha == 0.3  # §8


@pytest.mark.parametrize("bad, match", [
    ({"gamma": 1.0}, "gamma = 2.0 only"),
    ({"eta_mode": "paper-4b", "gamma": 0.0}, "gamma = 2.0 only"),
    ({"alpha": 0.3}, "reward: required"),
    ({"alpha": 1.5, "reward": "boxed-exact"}, "alpha must be in"),
    ({"teacher": ""}, "teacher: required"),
    ({"adaptive_gamma": True, "steer": "language"}, "visual steering only"),
    ({"eta_mode": "nope"}, "expected one of"),
])
def test_bad_configs_fail_with_one_line(bad, match):
    with pytest.raises((ValueError, ConfigError), match=match) as err:
        load_method_config(VGSConfig, PROFILES, "paper", None, {"teacher": "T", **bad})
    assert "\n" not in str(err.value)


def test_training_system_prompt_is_the_evaluation_one():
    from evals.prompts import SYSTEM_PROMPTS
    from methods.vgs.config import VGS_SYSTEM

    assert VGS_SYSTEM == SYSTEM_PROMPTS["vgs"]
