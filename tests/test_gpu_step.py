"""bench/gpu_step.py, the prepared GPU benchmark of issue 15: its real-size configs (parameter
counts on the meta device), its real-size batch (no model needed), and the whole script end to
end at toy sizes on the CPU. A GPU test runs the real sizes where CUDA is available."""
from __future__ import annotations

import importlib.util
import math
import re
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("gpu_step", ROOT / "bench" / "gpu_step.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gpu_step = _load()


def _table(text: str) -> list[dict[str, str]]:
    """The report's rows as {column: cell}."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]]


def test_real_configs_have_the_published_parameter_counts():
    """Qwen2.5-VL-3B-Instruct 3.75 B (vision tower 0.67 B), Qwen3-8B 8.19 B: the hub models' counts."""
    student = gpu_step.student_config("real")
    teacher = gpu_step.teacher_config("real")
    assert gpu_step.count_parameters(student) == 3_754_622_976
    assert gpu_step.count_parameters(teacher) == 8_190_735_360
    assert student.tie_word_embeddings and not teacher.tie_word_embeddings
    assert student.text_config.num_key_value_heads == 2 and teacher.head_dim == 128
    assert student.vision_config.fullatt_block_indexes == [7, 15, 23, 31]
    assert student.image_token_id == 151655 and teacher.eos_token_id == 151645


def test_build_on_device_fills_every_weight_and_ties_the_head():
    cfg = gpu_step.student_config("tiny")
    model = gpu_step.build_on_device(cfg, "cpu", torch.float32, seed=3)
    again = gpu_step.build_on_device(cfg, "cpu", torch.float32, seed=3)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    for (name, p), (_, q) in zip(model.named_parameters(), again.named_parameters()):
        assert torch.equal(p, q), name  # seeded
        if p.dim() > 1:
            assert 0.015 < float(p.detach().float().std()) < 0.025, name
        else:
            assert set(p.unique().tolist()) <= {0.0, 1.0}, name
    inv = model.model.language_model.rotary_emb.inv_freq  # a buffer no_init_weights must not skip
    assert torch.isfinite(inv).all() and float(inv[0]) == 1.0


def test_real_size_batch_with_images():
    """The --image batch at the real shapes: 512-token contexts holding one 448x448 image each
    (256 tokens), the teacher's text-only context the same random text, full responses."""
    tokenizer, _ = gpu_step.load_tokenizer()
    student = gpu_step.PolicyBundle(model=None, tokenizer=tokenizer, processor=gpu_step.image_processor("real"),
                                    is_vlm=True, path="student")
    teacher = gpu_step.PolicyBundle(model=None, tokenizer=tokenizer, processor=None, is_vlm=False, path="teacher")
    batch = gpu_step.prepared_batch(student, teacher, rows=8, group_size=4, prompt_len=512, response_len=1024,
                                    views={"student": "full", "teacher": "text_only"}, image=True, seed=0)
    s_ctx, t_ctx = batch.extras["rendered"].values()
    assert [int(c["input_ids"].numel()) for c in s_ctx] == [512, 512]
    assert [int(c["mm_token_type_ids"].sum()) for c in s_ctx] == [256, 256]
    assert all(int(c["input_ids"].numel()) == 512 - 256 - 2 for c in t_ctx)  # no image, no vision start/end
    assert batch.response_ids.shape == (8, 1024) and int(batch.response_mask.sum()) == 8 * 1024
    pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert not (batch.response_ids == pad).any()
    assert batch.group_ids.tolist() == [0] * 4 + [1] * 4


def test_tiny_cpu_run_end_to_end(tmp_path):
    """The whole script at toy sizes: both steps run through the trainer, with finite times and losses."""
    report = gpu_step.main(["--device", "cpu", "--tiny", "--out", str(tmp_path), "--kl", "k2",
                            "--checkpointing", "off,on"])
    assert report == tmp_path / "gpu_step-cpu-tiny.md"
    text = report.read_text()
    rows = _table(text)
    assert [(r["case"], r["grad ckpt"]) for r in rows] == [
        ("grpo", "off"), ("grpo", "on"), ("vold (k2)", "off"), ("vold (k2)", "on")]
    for r in rows:
        assert r["note"] == ""
        for col in ("step s", "first step s", "loss", "grad norm"):
            assert math.isfinite(float(r[col])), (r["case"], col)
        assert float(r["step s"]) > 0
    vold = [r for r in rows if r["case"].startswith("vold")]
    assert all(float(r["kl"]) > 0 for r in vold)
    assert "torch " in text and "transformers " in text and "bench/gpu_step.py" in text


def test_budget_skips_cases_with_a_note(tmp_path):
    report = gpu_step.main(["--device", "cpu", "--tiny", "--out", str(tmp_path), "--methods", "vold",
                            "--kl", "full_reverse", "--checkpointing", "off", "--budget-s", "0.001"])
    (row,) = _table(report.read_text())
    assert row["case"] == "vold (full_reverse)" and row["step s"] == "-"
    assert re.match(r"skipped: \d+ s spent of the 0 s budget", row["note"])


@pytest.mark.parametrize("argv, message", [
    (["--rows", "6", "--group-size", "4"], "--group-size must be >= 2 and divide --rows"),
    (["--kl", "k9"], "expected a comma-separated subset"),
    (["--device", "tpu"], "--device must be cpu, cuda or cuda:N"),
    (["--budget-s", "0"], "--budget-s must be > 0"),
])
def test_bad_flags_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        gpu_step.parse_args(["--device", "cpu", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]


def test_short_prompt_len_is_a_config_error(tmp_path):
    from harness.config import ConfigError

    with pytest.raises(ConfigError, match="--prompt-len 8 is shorter than the rendered prompt"):
        gpu_step.main(["--device", "cpu", "--tiny", "--prompt-len", "8", "--out", str(tmp_path)])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_real_sizes_on_the_gpu(tmp_path):
    """Real-size models, shortened rows: one GRPO and one VOLD (k2) case in well under a minute."""
    report = gpu_step.main(["--device", "cuda", "--out", str(tmp_path), "--rows", "4", "--group-size", "2",
                            "--prompt-len", "128", "--response-len", "128", "--kl", "k2", "--checkpointing", "off"])
    rows = _table(report.read_text())
    assert [r["case"] for r in rows] == ["grpo", "vold (k2)"]
    for r in rows:
        assert r["note"] == "" and math.isfinite(float(r["loss"])) and float(r["peak GiB"]) > 10


def test_hard_deadline_interrupts_a_running_case():
    with pytest.raises(gpu_step.BudgetExceeded):
        with gpu_step.hard_deadline(0.2):
            time.sleep(30)
    with gpu_step.hard_deadline(5.0):  # disarmed on leaving: nothing fires later
        pass
    time.sleep(0.05)


def test_a_case_cut_by_the_deadline_is_noted_and_the_rest_skipped(tmp_path, monkeypatch):
    deadline = gpu_step.hard_deadline
    monkeypatch.setattr(gpu_step, "hard_deadline", lambda seconds: deadline(0.5))
    monkeypatch.setattr(gpu_step, "run_case", lambda *a, **kw: time.sleep(30))
    report = gpu_step.main(["--device", "cpu", "--tiny", "--out", str(tmp_path), "--methods", "grpo"])
    rows = _table(report.read_text())
    assert [r["note"].split(":")[0] for r in rows] == ["stopped", "skipped"]
