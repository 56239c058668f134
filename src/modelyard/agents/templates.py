"""Agent templates: `${input.x}`, `${nodes.<id>.result.<path>}`, `${item.<path>}` and `{"$each": …, "template": …}`.

Pure data in, data out: no expression language, no code evaluation. A string that is exactly one template keeps the
referenced value's JSON type (an array stays an array); a template inside a longer string is rendered as text
(strings as they are, anything else as compact JSON). `$${` writes a literal `${`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

EACH = "$each"
_KEY = r"[A-Za-z0-9_\-]+"
_PATH = re.compile(rf"(?:\.({_KEY})|\[(\d+)\])")
_ROOTS = ("input", "nodes", "item")


class TemplateError(ValueError):
    """A template that cannot be parsed or resolved; the message names it."""

    def __init__(self, message: str, code: str = "invalid_template", path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.path = path  # the JSON path of the string holding it, when known


@dataclass(frozen=True)
class Ref:
    """One `${…}`: its root (`input`, `nodes`, `item`), the node it names (for `nodes`), and the path below."""

    raw: str  # the text between the braces
    root: str
    node: str | None
    path: tuple[str | int, ...]

    def __str__(self) -> str:
        return "${" + self.raw + "}"


def parse_path(text: str, *, start: int = 0) -> tuple[str | int, ...]:
    """`.a.b[0].c` (from `start`) -> ('a', 'b', 0, 'c'); the whole text must be path steps."""
    steps: list[str | int] = []
    pos = start
    while pos < len(text):
        m = _PATH.match(text, pos)
        if m is None:
            raise TemplateError(f"'{text}' is not a path: use names joined by dots and [index].")
        steps.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    return tuple(steps)


def parse_ref(raw: str) -> Ref:
    expr = raw.strip()
    m = re.match(_KEY, expr)
    root = m.group(0) if m else ""
    if root not in _ROOTS:
        raise TemplateError(f"'${{{raw}}}' must start with input., nodes.<id>.result or item.")
    rest = expr[len(root):]
    if root == "nodes":
        m = re.match(rf"\.({_KEY})\.result", rest)
        if m is None:
            raise TemplateError(f"'${{{raw}}}' must read nodes.<id>.result (then an optional path).")
        return Ref(raw, root, m.group(1), parse_path(rest, start=m.end()))
    path = parse_path(rest)
    if root == "input" and not path:
        raise TemplateError(f"'${{{raw}}}' must name an input: ${{input.<name>}}.")
    return Ref(raw, root, None, path)


def parse(text: str) -> list[str | Ref]:
    """A string as literal pieces and references (`$${` is a literal `${`)."""
    parts: list[str | Ref] = []
    buf: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$${", i):
            buf.append("${")
            i += 3
        elif text.startswith("${", i):
            end = text.find("}", i + 2)
            if end < 0:
                raise TemplateError(f"'{text}' opens '${{' without a closing '}}'.")
            if buf:
                parts.append("".join(buf))
                buf = []
            parts.append(parse_ref(text[i + 2:end]))
            i = end + 1
        else:
            buf.append(text[i])
            i += 1
    if buf:
        parts.append("".join(buf))
    return parts


def has_template(text: str) -> bool:
    return "${" in text.replace("$${", "")


def whole(text: str) -> Ref | None:
    """The reference when `text` is exactly one template (it then keeps the value's JSON type)."""
    parts = parse(text) if has_template(text) else []
    return parts[0] if len(parts) == 1 and isinstance(parts[0], Ref) else None


def walk(value: Any, path: str, *, in_item: bool = False,
         errors: list[TemplateError] | None = None) -> Iterator[tuple[Ref, str, bool]]:
    """Every reference in a JSON value: (ref, the JSON path of the string holding it, whether `${item}` is bound
    there). A string that does not parse raises TemplateError (with its path) — or, given `errors`, is added there
    and the walk goes on, so every bad template is reported at once."""
    if isinstance(value, str):
        if has_template(value):
            try:
                parts = parse(value)
            except TemplateError as exc:
                err = TemplateError(exc.message, exc.code, path)
                if errors is None:
                    raise err from None
                errors.append(err)
                return
            for part in parts:
                if isinstance(part, Ref):
                    yield part, path, in_item
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk(v, f"{path}[{i}]", in_item=in_item, errors=errors)
    elif isinstance(value, Mapping):
        if EACH in value:
            yield from walk(value[EACH], f"{path}.{EACH}", in_item=in_item, errors=errors)
            yield from walk(value.get("template"), f"{path}.template", in_item=True, errors=errors)
            return
        for k, v in value.items():
            yield from walk(v, f"{path}.{k}" if path else str(k), in_item=in_item, errors=errors)


def lookup(value: Any, path: tuple[str | int, ...], ref: Ref) -> Any:
    for step in path:
        if isinstance(step, int) and isinstance(value, list):
            if step >= len(value):
                raise TemplateError(f"{ref}: index {step} is past the end (length {len(value)}).", "missing_value")
            value = value[step]
        elif isinstance(step, str) and isinstance(value, Mapping):
            if step not in value:
                raise TemplateError(f"{ref}: no '{step}' there (it has {', '.join(map(str, value)) or 'nothing'}).",
                                    "missing_value")
            value = value[step]
        else:
            raise TemplateError(f"{ref}: cannot take {step!r} of {type(value).__name__}.", "missing_value")
    return value


@dataclass
class Scope:
    """What references resolve against: the run's inputs, finished nodes' results, the current item."""

    inputs: Mapping[str, Any]
    results: Mapping[str, Any]
    item: Any = None
    has_item: bool = False

    def resolve(self, ref: Ref) -> Any:
        if ref.root == "input":
            return lookup(self.inputs, ref.path, ref)
        if ref.root == "item":
            if not self.has_item:
                raise TemplateError(f"{ref} is only bound inside a map node's payload or a $each template.")
            return lookup(self.item, ref.path, ref)
        if ref.node not in self.results:
            raise TemplateError(f"{ref}: node '{ref.node}' has no result.", "missing_value")
        return lookup(self.results[ref.node], ref.path, ref)

    def with_item(self, item: Any) -> Scope:
        return Scope(self.inputs, self.results, item, True)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def render(value: Any, scope: Scope) -> Any:
    """The value with every template resolved and every `$each` expanded (raises TemplateError)."""
    if isinstance(value, str):
        if not has_template(value):
            return value.replace("$${", "${")
        parts = parse(value)
        if len(parts) == 1 and isinstance(parts[0], Ref):
            return scope.resolve(parts[0])
        return "".join(_text(scope.resolve(p)) if isinstance(p, Ref) else p for p in parts)
    if isinstance(value, list):
        out: list[Any] = []
        for v in value:
            if isinstance(v, Mapping) and EACH in v:
                out.extend(expand(v, scope))
            else:
                out.append(render(v, scope))
        return out
    if isinstance(value, Mapping):
        if EACH in value:
            return expand(value, scope)
        return {k: render(v, scope) for k, v in value.items()}
    return value


def expand(each: Mapping[str, Any], scope: Scope) -> list[Any]:
    """`{"$each": "${…array…}", "template": …}` -> the template rendered once per element, `${item}` bound to it."""
    items = render(each[EACH], scope)
    if not isinstance(items, list):
        raise TemplateError(f"$each '{each[EACH]}' resolved to {type(items).__name__}, not an array.", "not_an_array")
    return [render(each.get("template"), scope.with_item(item)) for item in items]
