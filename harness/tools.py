"""Tools a policy can call during a multi-turn rollout, and the parser of its tool calls.

Call format (Qwen2.5 / Hermes style), written by the model inside its assistant turn::

    <tool_call>{"name": "crop_image", "arguments": {"bbox_2d": [x1, y1, x2, y2], "target_image": 1}}</tool_call>

The text between the first ``<tool_call>`` and the next ``</tool_call>`` is read with
``json.loads`` (never ``eval``); the tags are located with ``str.find``, so parsing is linear in
the length of the model's output (no backtracking regular expression runs on it).

A ``Tool`` is any object with a ``name`` and ``__call__(arguments, images) -> Observation``, where
``images`` are the images seen so far in the trajectory (the sample's images, then the images of
earlier observations, in order; tools address them 1-based). Tools are registered by name in
``TOOLS`` (``register_tool``). A tool signals bad arguments by raising ``ToolError``;
``execute_tool_call`` turns that, and every other failure (unparseable call, unknown tool, a tool
that raises anything else), into an *error observation* (``Observation("Error: ...")``), so a
malformed call never aborts a rollout: the policy sees the error and may try again.

Built-in tools:

* ``crop_image`` (Pixel-Reasoner's zoom-in): ``{"bbox_2d": [x1, y1, x2, y2], "target_image": k}``,
  the box in pixel coordinates of image ``k`` (1-based over the images seen so far; default 1),
  ``0 <= x1 < x2 <= width``, ``0 <= y1 < y2 <= height``. Returns the cropped region, scaled up
  (aspect ratio kept) so that its shorter side is at least ``min_side`` pixels (28 by default: one
  merged Qwen2.5-VL patch) and processable by the Qwen-VL image processors.
* ``calculate``: ``{"expression": "12 * (3 + 4) / 2"}``, evaluated by a small ``ast`` walker over
  int / float literals, ``+ - * / **``, unary ``+`` / ``-`` and parentheses, with bounded
  expression length, exponent and result size (``eval`` is never used).
"""
from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from PIL import Image

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
MAX_CALL_CHARS = 4096  # a longer call body is refused before json.loads


@dataclass
class Observation:
    """What a tool returns: text, and images the policy sees next (in order)."""

    text: str
    images: list[Image.Image] = field(default_factory=list)
    error: bool = False


@dataclass
class ToolCall:
    """A parsed call: the tool's ``name`` and its JSON ``arguments`` object."""

    name: str
    arguments: dict[str, Any]


@dataclass
class ToolCallError:
    """A ``<tool_call>`` that could not be parsed; ``message`` is shown to the policy."""

    message: str


class ToolError(ValueError):
    """Raised by a tool for bad arguments; becomes an error observation."""


@runtime_checkable
class Tool(Protocol):
    name: str

    def __call__(self, arguments: dict[str, Any], images: list[Image.Image]) -> Observation: ...


TOOLS: dict[str, Tool] = {}


def register_tool(tool: Tool, *, replace: bool = False) -> Tool:
    """Add ``tool`` to ``TOOLS`` under ``tool.name`` (an existing name needs ``replace=True``)."""
    if not replace and tool.name in TOOLS:
        raise ValueError(f"a tool named {tool.name!r} is already registered")
    TOOLS[tool.name] = tool
    return tool


def resolve_tools(tools: Any = None) -> dict[str, Tool]:
    """A name -> tool mapping from None (every registered tool), names, tools, or a mapping."""
    if tools is None:
        return dict(TOOLS)
    if isinstance(tools, dict):
        return dict(tools)
    out: dict[str, Tool] = {}
    for t in tools:
        if isinstance(t, str):
            if t not in TOOLS:
                raise ValueError(f"unknown tool {t!r}; known: {', '.join(sorted(TOOLS))}")
            t = TOOLS[t]
        out[t.name] = t
    return out


def find_tool_call(text: str) -> tuple[int, int] | None:
    """``(start, end)`` of the first complete ``<tool_call>...</tool_call>`` in ``text`` (end is
    just after the closing tag), or None."""
    start = text.find(CALL_OPEN)
    if start < 0:
        return None
    close = text.find(CALL_CLOSE, start + len(CALL_OPEN))
    return None if close < 0 else (start, close + len(CALL_CLOSE))


def parse_tool_call(text: str) -> ToolCall | ToolCallError | None:
    """The first tool call in ``text``: a ``ToolCall``, a ``ToolCallError`` when it is malformed,
    or None when ``text`` holds no ``<tool_call>`` tag at all. Never raises; linear time."""
    start = text.find(CALL_OPEN)
    if start < 0:
        return None
    body_start = start + len(CALL_OPEN)
    close = text.find(CALL_CLOSE, body_start)
    if close < 0:
        return ToolCallError(f"unterminated {CALL_OPEN}: no {CALL_CLOSE} follows it")
    body = text[body_start:close].strip()
    if len(body) > MAX_CALL_CHARS:
        return ToolCallError(f"tool call too long ({len(body)} characters; at most {MAX_CALL_CHARS})")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:
        return ToolCallError(f"tool call is not valid JSON ({type(e).__name__}: {str(e)[:80]})")
    if not isinstance(data, dict):
        return ToolCallError('tool call must be a JSON object {"name": ..., "arguments": {...}}')
    name = data.get("name")
    if not isinstance(name, str) or not name:
        return ToolCallError('tool call has no "name" string')
    arguments = data.get("arguments", {})
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError):
            return ToolCallError('"arguments" is a string that is not valid JSON')
    if not isinstance(arguments, dict):
        return ToolCallError('"arguments" must be a JSON object')
    return ToolCall(name=name, arguments=arguments)


def error_observation(message: str) -> Observation:
    return Observation(text=f"Error: {message}", error=True)


def execute_tool_call(call: ToolCall | ToolCallError, images: list[Image.Image],
                      tools: dict[str, Tool] | None = None) -> Observation:
    """Run ``call`` against ``tools`` (default: ``TOOLS``); every failure is an error observation."""
    tools = TOOLS if tools is None else tools
    if isinstance(call, ToolCallError):
        return error_observation(call.message)
    tool = tools.get(call.name)
    if tool is None:
        return error_observation(f"unknown tool {call.name[:64]!r}; known: {', '.join(sorted(tools))}")
    try:
        obs = tool(call.arguments, list(images))
    except ToolError as e:
        return error_observation(f"{call.name}: {e}")
    except Exception as e:  # noqa: BLE001  a tool bug must not abort the whole rollout batch
        return error_observation(f"{call.name} failed ({type(e).__name__}: {str(e)[:120]})")
    if not isinstance(obs, Observation):
        return error_observation(f"{call.name} returned {type(obs).__name__}, not an Observation")
    return obs


# ------------------------------------------------------------------------------- crop_image
def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class CropImage:
    """``crop_image``: zoom into a box of one of the images seen so far (see the module docstring)."""

    name = "crop_image"

    def __init__(self, min_side: int = 28, max_aspect: float = 100.0) -> None:
        self.min_side = min_side
        self.max_aspect = max_aspect

    def __call__(self, arguments: dict[str, Any], images: list[Image.Image]) -> Observation:
        unknown = set(arguments) - {"bbox_2d", "target_image"}
        if unknown:
            raise ToolError(f"unexpected argument(s) {', '.join(sorted(map(str, unknown)))[:80]}; "
                            "expected bbox_2d, target_image")
        if "bbox_2d" not in arguments:
            raise ToolError("missing argument bbox_2d [x1, y1, x2, y2]")
        if not images:
            raise ToolError("there is no image to crop")
        target = arguments.get("target_image", 1)
        if isinstance(target, bool) or not isinstance(target, int) or not 1 <= target <= len(images):
            raise ToolError(f"target_image must be an integer from 1 to {len(images)}, got {str(target)[:32]}")
        image = images[target - 1]
        box = arguments["bbox_2d"]
        if not isinstance(box, list) or len(box) != 4 or not all(_number(v) for v in box):
            raise ToolError("bbox_2d must be a list of four numbers [x1, y1, x2, y2]")
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        w, h = image.size
        if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
            raise ToolError(f"bbox_2d {[x1, y1, x2, y2]} is empty or outside image {target} "
                            f"(width {w}, height {h}; need 0 <= x1 < x2 <= {w}, 0 <= y1 < y2 <= {h})")
        cw, ch = x2 - x1, y2 - y1
        if max(cw, ch) / min(cw, ch) > self.max_aspect:
            raise ToolError(f"bbox_2d is too thin ({cw}x{ch}; aspect ratio at most {self.max_aspect:g})")
        crop = image.convert("RGB").crop((x1, y1, x2, y2))
        if min(cw, ch) < self.min_side:
            scale = self.min_side / min(cw, ch)
            crop = crop.resize((max(self.min_side, round(cw * scale)), max(self.min_side, round(ch * scale))),
                               Image.Resampling.BICUBIC)
        return Observation(text=f"Cropped region {[x1, y1, x2, y2]} of image {target}.", images=[crop])


# -------------------------------------------------------------------------------- calculate
class Calculate:
    """``calculate``: arithmetic on numbers with ``+ - * / **`` and parentheses (no ``eval``)."""

    name = "calculate"

    def __init__(self, max_chars: int = 200, max_exponent: int = 64, max_abs: float = 1e100) -> None:
        self.max_chars = max_chars
        self.max_exponent = max_exponent
        self.max_abs = max_abs

    def __call__(self, arguments: dict[str, Any], images: list[Image.Image]) -> Observation:
        expr = arguments.get("expression")
        if not isinstance(expr, str) or not expr.strip():
            raise ToolError('missing argument "expression" (a string such as "3 * (4 + 5)")')
        if len(expr) > self.max_chars:
            raise ToolError(f"expression too long ({len(expr)} characters; at most {self.max_chars})")
        try:
            tree = ast.parse(expr.strip(), mode="eval")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            raise ToolError(f"cannot parse expression {expr[:60]!r}") from None
        value = self._eval(tree.body)
        return Observation(text=f"{expr.strip()} = {self.format(value)}")

    @staticmethod
    def format(value: int | float) -> str:
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return str(value) if isinstance(value, int) else f"{value:.12g}"

    def _check(self, value: int | float) -> int | float:
        if isinstance(value, float) and not math.isfinite(value) or abs(value) > self.max_abs:
            raise ToolError(f"result out of range (magnitude above {self.max_abs:g})")
        return value

    def _eval(self, node: ast.AST) -> int | float:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise ToolError(f"only numbers are allowed, got {type(node.value).__name__}")
            return self._check(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = self._eval(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)):
            a, b = self._eval(node.left), self._eval(node.right)
            if isinstance(node.op, ast.Add):
                return self._check(a + b)
            if isinstance(node.op, ast.Sub):
                return self._check(a - b)
            if isinstance(node.op, ast.Mult):
                return self._check(a * b)
            if isinstance(node.op, ast.Div):
                if b == 0:
                    raise ToolError("division by zero")
                return self._check(a / b)
            if abs(b) > self.max_exponent:
                raise ToolError(f"exponent {b} too large (at most {self.max_exponent} in magnitude)")
            if a == 0 and b < 0:
                raise ToolError("zero to a negative power")
            if a < 0 and not float(b).is_integer():
                raise ToolError("fractional power of a negative number")
            try:
                return self._check(a ** b)  # |b| <= max_exponent and |a| <= max_abs: bounded work
            except OverflowError:
                raise ToolError(f"result out of range (magnitude above {self.max_abs:g})") from None
        raise ToolError(f"unsupported syntax {type(node).__name__}; allowed: numbers, + - * / **, parentheses")


register_tool(CropImage())
register_tool(Calculate())


# ---------------------------------------------------------------------------- system prompt
TOOL_DESCRIPTIONS = {
    "crop_image": ('crop_image: zoom into a region of an image. Arguments: "bbox_2d" [x1, y1, x2, y2], the '
                   'box in pixel coordinates of the image (0 <= x1 < x2 <= width, 0 <= y1 < y2 <= height), '
                   'and "target_image", the 1-based index of the image to crop (1 is the original image).'),
    "calculate": 'calculate: evaluate an arithmetic expression. Arguments: "expression", e.g. "12 * (3 + 4)".',
}


def tool_system_prompt(tools: Any = ("crop_image",)) -> str:
    """The system prompt of a tool-using policy (Pixel-Reasoner style; written for this project):
    the tools it may call, the call format, and that the final answer goes in ``\\boxed{}``.
    Multi-turn evaluation (evals.run with ``tool_rounds``) and the smoke tool-use SFT traces
    (harness.data.packaged.easy_vqa_tool_traces) use the same text, so a policy sees at test time
    the prompt it was taught on."""
    names = sorted(resolve_tools(list(tools)))
    lines = [TOOL_DESCRIPTIONS.get(n, f"{n}: (no description)") for n in names]
    return ("You are a helpful assistant that can use tools to look closer at images.\n"
            "Tools:\n" + "\n".join(f"- {line}" for line in lines) + "\n"
            f'To call a tool, write {CALL_OPEN}{{"name": <tool name>, "arguments": {{...}}}}{CALL_CLOSE}; '
            "the result is shown to you in the next turn. Call a tool only when it helps, then reason "
            "step by step and put your final answer within \\boxed{}.")

__all__ = ["CALL_CLOSE", "CALL_OPEN", "Calculate", "CropImage", "Observation", "TOOLS", "Tool", "ToolCall",
           "ToolCallError", "ToolError", "error_observation", "execute_tool_call", "find_tool_call",
           "parse_tool_call", "register_tool", "resolve_tools", "tool_system_prompt"]
