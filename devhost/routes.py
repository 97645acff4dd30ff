"""HTTP route templates as the Functions host (ASP.NET Core routing) reads them.

Supported: literal segments (matched case-insensitively), ``{name}``, optional ``{name?}``,
defaults ``{name=value}``, constraints ``{name:int}`` (chainable: ``{n:int:min(1)}``), catch-all
``{*path}`` / ``{**path}``, several parameters in one segment (``{file}.{ext}``) and escaped
braces ``{{`` ``}}``. Constraints: int, long, bool, guid, alpha, decimal, double, float,
datetime, min, max, range, minlength, maxlength, length, regex.

When several templates match a path, literal segments win over constrained parameters, which
win over plain parameters, then optional ones, then catch-alls (ASP.NET's route precedence).
"""
from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote


class RouteTemplateError(ValueError):
    """A route template the host would refuse."""


@dataclass(frozen=True)
class Param:
    name: str
    constraints: tuple[tuple[str, str | None], ...] = ()
    optional: bool = False
    default: str | None = None
    catch_all: bool = False


_INT32 = (-2**31, 2**31 - 1)
_INT64 = (-2**63, 2**63 - 1)
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _as_int(v: str, bounds: tuple[int, int]) -> int | None:
    if not re.fullmatch(r"[+-]?\d+", v):
        return None
    n = int(v)
    return n if bounds[0] <= n <= bounds[1] else None


def _args(arg: str | None, count: int, name: str) -> list[int]:
    parts = [a.strip() for a in (arg or "").split(",")] if arg else []
    if len(parts) != count or not all(re.fullmatch(r"-?\d+", p) for p in parts):
        raise RouteTemplateError(f"constraint {name} needs {count} integer argument(s), got ({arg})")
    return [int(p) for p in parts]


def _check_constraint(name: str, arg: str | None):
    """Validate a constraint at load time; return a predicate over the (decoded) value."""
    n = name.lower()
    if n == "int":
        return lambda v: _as_int(v, _INT32) is not None
    if n == "long":
        return lambda v: _as_int(v, _INT64) is not None
    if n == "bool":
        return lambda v: v.lower() in ("true", "false")
    if n == "guid":
        def is_guid(v: str) -> bool:
            try:
                uuid.UUID(v)
                return True
            except ValueError:
                return False
        return is_guid
    if n == "alpha":
        return lambda v: re.fullmatch(r"[A-Za-z]+", v) is not None
    if n in ("decimal", "double", "float"):
        return lambda v: bool(_NUMBER.match(v)) and math.isfinite(float(v))
    if n == "datetime":
        def is_datetime(v: str) -> bool:
            try:
                datetime.fromisoformat(v)
                return True
            except ValueError:
                return False
        return is_datetime
    if n == "min":
        (lo,) = _args(arg, 1, n)
        return lambda v: (x := _as_int(v, _INT64)) is not None and x >= lo
    if n == "max":
        (hi,) = _args(arg, 1, n)
        return lambda v: (x := _as_int(v, _INT64)) is not None and x <= hi
    if n == "range":
        lo, hi = _args(arg, 2, n)
        return lambda v: (x := _as_int(v, _INT64)) is not None and lo <= x <= hi
    if n == "minlength":
        (lo,) = _args(arg, 1, n)
        return lambda v: len(v) >= lo
    if n == "maxlength":
        (hi,) = _args(arg, 1, n)
        return lambda v: len(v) <= hi
    if n == "length":
        nums = _args(arg, 2, n) if arg and "," in arg else _args(arg, 1, n) * 2
        return lambda v: nums[0] <= len(v) <= nums[1]
    if n == "regex":
        if not arg:
            raise RouteTemplateError("constraint regex needs a pattern")
        try:
            rx = re.compile(arg, re.IGNORECASE)
        except re.error as e:
            raise RouteTemplateError(f"constraint regex({arg}): {e}") from e
        return lambda v: rx.search(v) is not None
    raise RouteTemplateError(f"unknown route constraint {name!r}")


def _parse_param(body: str, template: str) -> Param:
    catch_all = body.startswith("*")
    body = body.lstrip("*")
    i, n = 0, len(body)
    while i < n and body[i] not in ":=?":
        i += 1
    name = body[:i]
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise RouteTemplateError(f"route {template!r}: bad parameter name {name!r}")
    constraints: list[tuple[str, str | None]] = []
    optional, default = False, None
    while i < n:
        c = body[i]
        if c == ":":
            j = i + 1
            while j < n and body[j] not in "(:=?":
                j += 1
            cname, arg = body[i + 1:j], None
            if j < n and body[j] == "(":
                depth, k = 0, j
                while k < n:
                    if body[k] == "(":
                        depth += 1
                    elif body[k] == ")":
                        depth -= 1
                        if depth == 0:
                            break
                    k += 1
                if k >= n:
                    raise RouteTemplateError(f"route {template!r}: unbalanced '(' in {{{body}}}")
                arg, j = body[j + 1:k], k + 1
            if arg is not None:
                arg = arg.replace("{{", "{").replace("}}", "}")
            constraints.append((cname, arg))
            i = j
        elif c == "=":
            default, i = body[i + 1:], n
        elif c == "?" and i == n - 1:
            optional, i = True, n
        else:
            raise RouteTemplateError(f"route {template!r}: unexpected {c!r} in {{{body}}}")
    for cname, arg in constraints:
        _check_constraint(cname, arg)
    return Param(name, tuple(constraints), optional or default is not None, default, catch_all)


def _split_segment(seg: str, template: str) -> list[str | Param]:
    """A path segment as literal strings and Params."""
    parts: list[str | Param] = []
    lit, i, n = "", 0, len(seg)
    while i < n:
        c = seg[i]
        if c == "{" and seg.startswith("{{", i):
            lit, i = lit + "{", i + 2
        elif c == "}" and seg.startswith("}}", i):
            lit, i = lit + "}", i + 2
        elif c == "{":
            depth, j = 0, i + 1
            while j < n and not (seg[j] == "}" and depth == 0):
                depth += {"(": 1, ")": -1}.get(seg[j], 0)
                j += 1
            if j >= n:
                raise RouteTemplateError(f"route {template!r}: unclosed '{{'")
            if lit:
                parts.append(lit)
                lit = ""
            if parts and isinstance(parts[-1], Param):
                raise RouteTemplateError(
                    f"route {template!r}: two parameters in a segment need a literal between them")
            parts.append(_parse_param(seg[i + 1:j], template))
            i = j + 1
        elif c == "}":
            raise RouteTemplateError(f"route {template!r}: unmatched '}}'")
        else:
            lit, i = lit + c, i + 1
    if lit:
        parts.append(lit)
    return parts


class RouteTemplate:
    """One compiled route template (without the route prefix)."""

    def __init__(self, template: str):
        self.template = template
        text = template.strip().strip("/")
        if text.startswith("~/"):
            text = text[2:]
        self.text = text
        segments = [s for s in text.split("/")] if text else []
        if any(s == "" for s in segments):
            raise RouteTemplateError(f"route {template!r}: empty segment")
        self.params: list[Param] = []
        self._groups: dict[str, Param] = {}
        self._checks: dict[str, list] = {}
        regex, ranks = "", []
        seen_optional = False
        for idx, seg in enumerate(segments):
            parts = _split_segment(seg, template)
            last = idx == len(segments) - 1
            if len(parts) == 1 and isinstance(parts[0], Param):
                p = parts[0]
                g = self._add(p, template)
                if p.catch_all:
                    if not last:
                        raise RouteTemplateError(f"route {template!r}: a catch-all must be the last segment")
                    regex += f"(?:/(?P<{g}>.*))?"
                    ranks.append(5)
                elif p.optional:
                    regex += f"(?:/(?P<{g}>[^/]+))?"
                    ranks.append(4)
                    seen_optional = True
                else:
                    if seen_optional:
                        raise RouteTemplateError(
                            f"route {template!r}: only the last parameters may be optional")
                    regex += f"/(?P<{g}>[^/]+)"
                    ranks.append(2 if p.constraints else 3)
                continue
            if seen_optional:
                raise RouteTemplateError(f"route {template!r}: only the last parameters may be optional")
            # Complex segments match right to left in ASP.NET: with "{name}.{ext?}", "a.b.txt"
            # gives name "a.b" and ext "txt". Earlier parameters are lazy and an optional last
            # parameter cannot contain the literal before it, which gives the same split.
            tail_optional = isinstance(parts[-1], Param) and parts[-1].optional
            body = ""
            for k, part in enumerate(parts):
                if isinstance(part, str):
                    body += re.escape(part)
                    continue
                if part.catch_all:
                    raise RouteTemplateError(f"route {template!r}: a catch-all must be a whole segment")
                g = self._add(part, template)
                if part.optional:
                    if k != len(parts) - 1 or k == 0 or not isinstance(parts[k - 1], str):
                        raise RouteTemplateError(
                            f"route {template!r}: an optional parameter in a complex segment must be last")
                    prev = re.escape(parts[k - 1])
                    body = body[: len(body) - len(prev)] + f"(?:{prev}(?P<{g}>(?:(?!{prev})[^/])+))?"
                else:
                    body += f"(?P<{g}>[^/]+?)" if tail_optional else f"(?P<{g}>[^/]+)"
            regex += "/" + body
            ranks.append(0 if all(isinstance(p, str) for p in parts) else 1)
        self.regex = re.compile("^" + regex + "/?$", re.IGNORECASE)
        self.precedence = tuple(ranks)

    def _add(self, p: Param, template: str) -> str:
        if any(q.name.lower() == p.name.lower() for q in self.params):
            raise RouteTemplateError(f"route {template!r}: parameter {p.name!r} appears twice")
        g = f"p{len(self.params)}"
        self.params.append(p)
        self._groups[g] = p
        self._checks[g] = [_check_constraint(c, a) for c, a in p.constraints]
        return g

    def match(self, path: str) -> dict[str, str] | None:
        """Route values for a raw (still percent-encoded) path relative to the prefix, or None."""
        if path and not path.startswith("/"):
            path = "/" + path
        m = self.regex.match(path)
        if not m:
            return None
        values: dict[str, str] = {}
        for g, p in self._groups.items():
            raw = m.group(g)
            if raw is None or (p.catch_all and raw == ""):
                if p.default is not None:
                    values[p.name] = p.default
                continue
            value = unquote(raw)
            if not all(check(value) for check in self._checks[g]):
                return None
            values[p.name] = value
        return values

    def same_as(self, other: RouteTemplate) -> bool:
        """Whether two templates are the same route text (the host refuses two such functions
        when their methods overlap)."""
        return self.text.lower() == other.text.lower()

    def __repr__(self) -> str:
        return f"RouteTemplate({self.template!r})"


def is_reserved(template: str) -> bool:
    """The Functions host keeps routes starting with "admin" for itself (whatever the prefix)."""
    return template.strip().strip("/").lower().startswith("admin")
