"""Typed configs: dataclasses loaded from YAML (or dicts), strictly validated.

An unknown key or a value of the wrong type is a :class:`ConfigError` that names the file and the
dotted key, e.g. ``configs/run.yaml: optim.lr: expected float, got str ('fast')``.
"""
from __future__ import annotations

import dataclasses
import math
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config that does not match its dataclass; the message names the source and key."""


def _fail(source: str, key: str, msg: str) -> ConfigError:
    where = f"{source}: " if source else ""
    return ConfigError(f"{where}{key or '<root>'}: {msg}")


def _convert(tp: Any, value: Any, source: str, key: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Union or (hasattr(types, "UnionType") and isinstance(tp, types.UnionType)):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, source, key)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:  # Optional[X]: X's own error names the field that is wrong
            raise errors[0]
        raise _fail(source, key, f"expected {_name(tp)}, got {type(value).__name__} ({value!r})")
    if origin is Literal:
        if value not in get_args(tp):
            raise _fail(source, key, f"expected one of {list(get_args(tp))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise _fail(source, key, f"expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return from_dict(tp, value, source=source, prefix=key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _fail(source, key, f"expected a list, got {type(value).__name__} ({value!r})")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise _fail(source, key, f"expected {len(args)} items, got {len(value)}")
            return tuple(_convert(a, v, source, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_convert(item, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(source, key, f"expected a mapping, got {type(value).__name__}")
        kt, vt = get_args(tp) or (Any, Any)
        return {_convert(kt, k, source, f"{key}.{k}"): _convert(vt, v, source, f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML reads "1e-3" (no dot) as a string: accept numeric strings for floats.
            number = None
            if isinstance(value, str):
                try:
                    number = float(value)
                except ValueError:
                    pass
            if number is None:
                raise _fail(source, key, f"expected float, got {type(value).__name__} ({value!r})")
        else:
            number = float(value)
        if not math.isfinite(number):  # nan / inf: never a usable setting (and nan != nan on resume)
            raise _fail(source, key, f"expected a finite float, got {value!r}")
        return number
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(source, key, f"expected int, got {type(value).__name__} ({value!r})")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(source, key, f"expected bool, got {type(value).__name__} ({value!r})")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise _fail(source, key, f"expected str, got {type(value).__name__} ({value!r})")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise _fail(source, key, f"expected a path, got {type(value).__name__}")
        return Path(value)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _fail(source, key, f"expected {_name(tp)}, got {type(value).__name__} ({value!r})")


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def from_dict(cls: type[T], data: dict[str, Any], source: str = "", prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, recursively; unknown keys and wrong types are errors."""
    if not isinstance(data, dict):
        raise _fail(source, prefix, f"expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        k = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise _fail(source, k, f"unknown key (known keys: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _convert(hints[name], value, source, key)
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        k = f"{prefix}.{missing[0]}" if prefix else missing[0]
        raise _fail(source, k, "required key is missing")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:  # __post_init__ validation
        raise _fail(source, prefix, str(e)) from e


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain-YAML-serialisable dict of a config dataclass (paths as strings)."""
    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v
    return conv(cfg)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``override`` wins."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["optim.lr=1e-5", "steps=3"]`` -> nested dict, values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def load_config(cls: type[T], path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                base: dict[str, Any] | None = None) -> T:
    """Load ``cls`` from ``base`` (e.g. a profile's defaults) ⊕ YAML file ``path`` ⊕ ``overrides``."""
    data: dict[str, Any] = dict(base or {})
    source = ""
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read config ({e.strerror})") from e
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: <root>: expected a mapping, got {type(loaded).__name__}")
        data = merge(data, loaded)
    if overrides:
        data = merge(data, overrides)
        source = source + " (with overrides)" if source else "overrides"
    return from_dict(cls, data, source=source)


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
