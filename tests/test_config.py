"""The typed config loader: unknown keys and wrong types are errors naming the file and key."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest

from harness.config import ConfigError, load_config, parse_overrides, save_config, to_dict


@dataclass
class Optim:
    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["cosine", "constant"] = "cosine"


@dataclass
class Run:
    name: str
    steps: int = 3
    optim: Optim = field(default_factory=Optim)
    tags: list[str] = field(default_factory=list)
    init: Optional[str] = None


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(text)
    return p


def test_loads_nested_values_and_defaults(tmp_path):
    p = write(tmp_path, "name: a\noptim:\n  lr: 1e-3\n  schedule: constant\ntags: [x, y]\n")
    cfg = load_config(Run, p)
    assert cfg == Run(name="a", optim=Optim(lr=1e-3, schedule="constant"), tags=["x", "y"])
    assert isinstance(cfg.optim.lr, float)


def test_unknown_key_names_file_and_dotted_key(tmp_path):
    p = write(tmp_path, "name: a\noptim:\n  learning_rate: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(Run, p)
    assert str(p) in str(e.value) and "optim.learning_rate" in str(e.value) and "unknown key" in str(e.value)


@pytest.mark.parametrize("text,key", [
    ("name: a\nsteps: three\n", "steps"),
    ("name: a\nsteps: 2.5\n", "steps"),
    ("name: a\noptim: {lr: fast}\n", "optim.lr"),
    ("name: a\noptim: {schedule: linear}\n", "optim.schedule"),
    ("name: a\ntags: [1]\n", "tags[0]"),
    ("name: 3\n", "name"),
    ("name: a\nsteps: true\n", "steps"),
    ("name: a\noptim: {betas: [0.9]}\n", "optim.betas"),
])
def test_wrong_type_names_file_and_key(tmp_path, text, key):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(Run, p)
    assert str(e.value).startswith(f"{p}: {key}:"), str(e.value)


def test_missing_required_key_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="name: required key is missing"):
        load_config(Run, write(tmp_path, "steps: 1\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Run, write(tmp_path, "name: [a\n"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(Run, write(tmp_path, "- a\n"))
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(Run, tmp_path / "absent.yaml")


def test_overrides_and_round_trip(tmp_path):
    over = parse_overrides(["optim.lr=0.5", "steps=7", "init=null"])
    cfg = load_config(Run, write(tmp_path, "name: a\ninit: x\n"), overrides=over)
    assert cfg.optim.lr == 0.5 and cfg.steps == 7 and cfg.init is None
    out = tmp_path / "resolved.yaml"
    save_config(cfg, out)
    assert load_config(Run, out) == cfg
    assert to_dict(cfg)["optim"]["betas"] == [0.9, 0.999]
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["steps"])
