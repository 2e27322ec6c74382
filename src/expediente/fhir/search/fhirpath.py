"""A small, fast FHIRPath evaluator for search-parameter expressions.

It covers the subset the R4 SearchParameter expressions use, and a little more:

- paths (``Patient.name.given``), a leading type name (``Patient``, ``Resource``), indexers
  (``Bundle.entry[0]``), parentheses, ``$this``, ``%resource``/``%rootResource``/``%context``;
- choice elements: ``Observation.value`` finds ``valueQuantity``, ``valueString``...;
  ``value.ofType(Quantity)``, ``value as Quantity`` and ``value.as(Quantity)`` read
  ``valueQuantity`` directly (the choice names and suffixes come from the R4 JSON Schema, via
  the package definitions);
- ``|`` union, ``=`` ``!=`` ``~`` ``!~`` ``<`` ``>`` ``<=`` ``>=``, ``and`` ``or`` ``xor``
  ``implies``, ``in`` ``contains``, ``is`` ``as``;
- functions ``where``, ``select``, ``exists``, ``empty``, ``not``, ``first``, ``last``,
  ``count``, ``ofType``, ``as``, ``is``, ``resolve``, ``extension``, ``hasValue``.

``resolve()`` does not read the database: a relative or absolute reference resolves to a stub
that knows its type (enough for ``resolve() is Patient``); ``#id`` resolves to the contained
resource. Anything else (arithmetic, date literals, other functions) raises ``FHIRPathError``
when the expression is compiled, never while evaluating a resource.

Each expression is parsed once into a tree of Python closures (``compile_expression`` caches
them); evaluation walks plain JSON (dicts, lists, str, bool, numbers) with no conversion.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

__all__ = [
    "FHIRPathError",
    "compile_expression",
    "evaluate",
    "parse_reference",
    "ResolvedReference",
    "split_union",
    "is_type",
]


class FHIRPathError(ValueError):
    """The expression is not valid FHIRPath, or uses something this evaluator does not support."""


# A compiled node: (focus collection, root resource) -> collection.
Node = Callable[[list, Any], list]

# --------------------------------------------------------------------------------------------
# References


_REF_RE = re.compile(
    r"^(?:(?P<base>.*)/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/(?P<version>[A-Za-z0-9\-.]{1,64}))?$"
)


def parse_reference(ref: str) -> tuple[str | None, str, str] | None:
    """``"Patient/1"`` -> ``(None, "Patient", "1")``; ``"http://x/fhir/Patient/1"`` ->
    ``("http://x/fhir", "Patient", "1")``; ``None`` when it does not end in ``Type/id``
    (``#contained``, ``urn:uuid:...``, most canonicals). A ``/_history/n`` suffix is dropped."""
    m = _REF_RE.match(ref)
    if m is None:
        return None
    return m.group("base"), m.group("type"), m.group("id")


class ResolvedReference:
    """What ``resolve()`` yields for a reference outside the resource: its type and id."""

    __slots__ = ("type", "id")

    def __init__(self, type_: str, id_: str | None):
        self.type = type_
        self.id = id_

    def __repr__(self) -> str:
        return f"ResolvedReference({self.type}/{self.id})"


def _resolve(item: Any, root: Any) -> Any:
    ref = None
    if type(item) is dict:
        ref = item.get("reference")
        if ref is None:
            t = item.get("type")
            # A logical reference (identifier only) with an explicit type.
            return ResolvedReference(t, None) if type(t) is str and t else None
    elif type(item) is str:
        ref = item
    if type(ref) is not str:
        return None
    if ref.startswith("#"):
        if type(root) is dict:
            for c in root.get("contained") or ():
                if type(c) is dict and c.get("id") == ref[1:]:
                    return c
        return None
    parsed = parse_reference(ref)
    if parsed is None:
        return None
    return ResolvedReference(parsed[1], parsed[2])


# --------------------------------------------------------------------------------------------
# Types

_RESOURCE_NOT_DOMAIN = frozenset({"Bundle", "Binary", "Parameters"})
_STRING_TYPES = frozenset(
    {"string", "code", "id", "uri", "url", "canonical", "markdown", "oid", "uuid", "base64Binary", "xhtml", "String"}
)
_INTEGER_TYPES = frozenset({"integer", "positiveInt", "unsignedInt", "Integer"})
_DECIMAL_TYPES = frozenset({"decimal", "Decimal"})
_DATE_RE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")
_DATETIME_RE = re.compile(r"^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$")
_INSTANT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_TIME_RE = re.compile(r"^\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")

_QUANTITY_KEYS = frozenset({"value", "comparator", "unit", "system", "code"})
_SHAPES: dict[str, frozenset[str]] = {
    "Reference": frozenset({"reference", "type", "identifier", "display"}),
    "CodeableConcept": frozenset({"coding", "text"}),
    "Coding": frozenset({"system", "version", "code", "display", "userSelected"}),
    "Quantity": _QUANTITY_KEYS,
    "SimpleQuantity": _QUANTITY_KEYS,
    "Age": _QUANTITY_KEYS,
    "Duration": _QUANTITY_KEYS,
    "Distance": _QUANTITY_KEYS,
    "Count": _QUANTITY_KEYS,
    "Money": frozenset({"value", "currency"}),
    "Period": frozenset({"start", "end"}),
    "Range": frozenset({"low", "high"}),
    "Ratio": frozenset({"numerator", "denominator"}),
    "Identifier": frozenset({"use", "type", "system", "value", "period", "assigner"}),
    "HumanName": frozenset({"use", "text", "family", "given", "prefix", "suffix", "period"}),
    "Address": frozenset(
        {"use", "type", "text", "line", "city", "district", "state", "postalCode", "country", "period"}
    ),
    "ContactPoint": frozenset({"system", "value", "use", "rank", "period"}),
    "Attachment": frozenset({"contentType", "language", "data", "url", "size", "hash", "title", "creation"}),
    "Timing": frozenset({"event", "repeat", "code"}),
    "SampledData": frozenset(
        {"origin", "period", "factor", "lowerLimit", "upperLimit", "dimensions", "data"}
    ),
    "Annotation": frozenset({"authorReference", "authorString", "time", "text"}),
}
_IGNORED_KEYS = frozenset({"id", "extension", "modifierExtension"})


def _type_name(spec: str) -> str:
    # FHIR.Patient / System.String -> Patient / String
    return spec.rsplit(".", 1)[-1]


def _capitalize(t: str) -> str:
    return t[:1].upper() + t[1:]


def is_type(value: Any, t: str) -> bool:
    """Best-effort runtime type test of a JSON value (used where the type is not in the key)."""
    tv = type(value)
    if tv is ResolvedReference:
        return value.type == t or t == "Resource" or (t == "DomainResource" and value.type not in _RESOURCE_NOT_DOMAIN)
    if tv is dict:
        rt = value.get("resourceType")
        if rt is not None:
            return rt == t or t == "Resource" or (t == "DomainResource" and rt not in _RESOURCE_NOT_DOMAIN)
        shape = _SHAPES.get(t)
        if shape is None:
            return False
        keys = {k for k in value if k not in _IGNORED_KEYS and not k.startswith("_")}
        return bool(keys) and keys <= shape
    if tv is bool:
        return t in ("boolean", "Boolean")
    if tv is int:
        return t in _INTEGER_TYPES
    if tv is float or tv is Decimal:
        return t in _DECIMAL_TYPES
    if tv is str:
        if t in _STRING_TYPES:
            return True
        if t == "date":
            return _DATE_RE.match(value) is not None
        if t in ("dateTime", "DateTime"):
            return _DATETIME_RE.match(value) is not None
        if t == "instant":
            return _INSTANT_RE.match(value) is not None
        if t in ("time", "Time"):
            return _TIME_RE.match(value) is not None
    return False


def split_union(expr: str) -> list[str]:
    """Split an expression on its top-level ``|`` (outside parentheses, brackets and strings)."""
    parts: list[str] = []
    depth = 0
    quote = ""
    start = 0
    i = 0
    while i < len(expr):
        ch = expr[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expr[start:i].strip())
            start = i + 1
        i += 1
    parts.append(expr[start:].strip())
    return [p for p in parts if p]


# --------------------------------------------------------------------------------------------
# Tokenizer and parser

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+|//[^\n]*|/\*.*?\*/)
   |(?P<str>'(?:[^'\\]|\\.)*')
   |(?P<date>@[0-9T:.+\-Z]*)
   |(?P<num>\d+(?:\.\d+)?)
   |(?P<delim>`(?:[^`\\]|\\.)*`)
   |(?P<var>%[A-Za-z_][A-Za-z0-9_]*|%`[^`]*`|%'[^']*'|\$this|\$index|\$total)
   |(?P<id>[A-Za-z_][A-Za-z0-9_]*)
   |(?P<op>!=|!~|<=|>=|[=~<>|.()\[\],+\-*/&{}])
    """,
    re.X | re.S,
)

_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unescape(s: str) -> str:
    out = []
    i = 0
    while i < len(s):
        ch = s[i]
        if ch == "\\" and i + 1 < len(s):
            nxt = s[i + 1]
            if nxt == "u" and i + 5 < len(s):
                out.append(chr(int(s[i + 2 : i + 6], 16)))
                i += 6
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _tokenize(expr: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN_RE.match(expr, pos)
        if m is None:
            raise FHIRPathError(f"unexpected character {expr[pos]!r} at {pos} in {expr!r}")
        pos = m.end()
        kind = m.lastgroup
        text = m.group()
        if kind == "ws":
            continue
        if kind == "date":
            raise FHIRPathError(f"date/time literals are not supported: {text!r}")
        if kind == "delim":
            kind, text = "id", _unescape(text[1:-1])
        tokens.append((kind, text))
    tokens.append(("eof", ""))
    return tokens


# Binary operator precedence, lowest first (FHIRPath N1 §"Operator precedence").
_LEVELS: tuple[frozenset[str], ...] = (
    frozenset({"implies"}),
    frozenset({"or", "xor"}),
    frozenset({"and"}),
    frozenset({"in", "contains"}),
    frozenset({"=", "~", "!=", "!~"}),
    frozenset({"<", ">", "<=", ">="}),
    frozenset({"|"}),
    frozenset({"is", "as"}),
    frozenset({"+", "-", "&"}),
    frozenset({"*", "/", "div", "mod"}),
)
_TYPE_LEVEL = 7


class _Parser:
    def __init__(self, expr: str):
        self.expr = expr
        self.tokens = _tokenize(expr)
        self.pos = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos]

    def next(self) -> tuple[str, str]:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def expect(self, text: str) -> None:
        kind, value = self.next()
        if value != text or kind not in ("op", "id"):
            raise FHIRPathError(f"expected {text!r}, found {value!r} in {self.expr!r}")

    def parse(self) -> tuple:
        node = self.binary(0)
        if self.peek()[0] != "eof":
            raise FHIRPathError(f"unexpected {self.peek()[1]!r} in {self.expr!r}")
        return node

    def _is_operator(self, level: int) -> bool:
        kind, value = self.peek()
        return kind in ("op", "id") and value in _LEVELS[level]

    def binary(self, level: int) -> tuple:
        if level == len(_LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self._is_operator(level):
            op = self.next()[1]
            if level == _TYPE_LEVEL:
                left = (op, left, self.type_specifier())
            else:
                left = ("binop", op, left, self.binary(level + 1))
        return left

    def type_specifier(self) -> str:
        kind, name = self.next()
        if kind != "id":
            raise FHIRPathError(f"type name expected, found {name!r} in {self.expr!r}")
        while self.peek() == ("op", ".") and self.tokens[self.pos + 1][0] == "id":
            self.pos += 1
            name = self.next()[1]
        return _type_name(name)

    def unary(self) -> tuple:
        kind, value = self.peek()
        if kind == "op" and value in ("+", "-"):
            self.next()
            operand = self.unary()
            if value == "+":
                return operand
            if operand[0] == "lit" and len(operand[1]) == 1 and type(operand[1][0]) in (int, Decimal):
                return ("lit", [-operand[1][0]])
            raise FHIRPathError(f"unary minus is only supported on number literals in {self.expr!r}")
        return self.postfix()

    def postfix(self) -> tuple:
        node = self.term()
        while True:
            kind, value = self.peek()
            if kind == "op" and value == ".":
                self.next()
                kind, name = self.next()
                if kind != "id":
                    raise FHIRPathError(f"name expected after '.', found {name!r} in {self.expr!r}")
                if self.peek() == ("op", "("):
                    node = ("call", node, name, self.arguments())
                else:
                    node = ("member", node, name)
            elif kind == "op" and value == "[":
                self.next()
                index = self.binary(0)
                self.expect("]")
                node = ("index", node, index)
            else:
                return node

    def arguments(self) -> list[tuple]:
        self.expect("(")
        args: list[tuple] = []
        if self.peek() == ("op", ")"):
            self.next()
            return args
        while True:
            args.append(self.binary(0))
            kind, value = self.next()
            if value == ")":
                return args
            if value != ",":
                raise FHIRPathError(f"expected ',' or ')', found {value!r} in {self.expr!r}")

    def term(self) -> tuple:
        kind, value = self.next()
        if kind == "str":
            return ("lit", [_unescape(value[1:-1])])
        if kind == "num":
            return ("lit", [Decimal(value) if "." in value else int(value)])
        if kind == "var":
            return ("var", value)
        if kind == "op" and value == "(":
            node = self.binary(0)
            self.expect(")")
            return node
        if kind == "op" and value == "{":
            self.expect("}")
            return ("lit", [])
        if kind == "id":
            if value in ("true", "false") and self.peek() != ("op", "("):
                return ("lit", [value == "true"])
            if self.peek() == ("op", "("):
                return ("call", None, value, self.arguments())
            return ("ident", value)
        raise FHIRPathError(f"unexpected {value!r} in {self.expr!r}")


# --------------------------------------------------------------------------------------------
# Compiler


@functools.cache
def _choices() -> dict[str, tuple[str, ...]]:
    from expediente.fhir.search.registry import choice_elements

    return choice_elements()


def _extend(out: list, v: Any) -> None:
    if type(v) is list:
        for x in v:
            if x is not None:
                out.append(x)
    elif v is not None:
        out.append(v)


def _make_nav(name: str) -> Callable[[list], list]:
    """Navigation to child ``name`` of every item (choice elements: any ``name + Type``)."""
    suffixes = _choices().get(name)
    if not suffixes:

        def nav(items: list) -> list:
            out: list = []
            for it in items:
                if type(it) is dict:
                    v = it.get(name)
                    if v is not None:
                        if type(v) is list:
                            for x in v:
                                if x is not None:
                                    out.append(x)
                        else:
                            out.append(v)
            return out

        return nav

    keys = tuple(name + s for s in suffixes)
    suffix_set = frozenset(suffixes)
    n = len(name)

    def choice_nav(items: list) -> list:
        out: list = []
        for it in items:
            if type(it) is not dict:
                continue
            v = it.get(name)
            if v is None:
                if len(it) < len(keys):
                    for k in it:
                        if k.startswith(name) and k[n:] in suffix_set:
                            v = it[k]
                            break
                else:
                    for k in keys:
                        v = it.get(k)
                        if v is not None:
                            break
            _extend(out, v)
        return out

    return choice_nav


def _make_typed_nav(name: str, type_: str) -> Callable[[list], list] | None:
    """``name.ofType(type_)`` on a choice element: read ``name + Type`` directly."""
    suffixes = _choices().get(name)
    key_suffix = _capitalize(type_)
    if not suffixes or key_suffix not in suffixes:
        return None
    key = name + key_suffix

    def nav(items: list) -> list:
        out: list = []
        for it in items:
            if type(it) is dict:
                v = it.get(key)
                if v is not None:
                    _extend(out, v)
                else:
                    # Not a choice in this type after all: fall back to a runtime type test.
                    v = it.get(name)
                    if v is not None:
                        for x in v if type(v) is list else (v,):
                            if x is not None and is_type(x, type_):
                                out.append(x)
        return out

    return nav


def _singleton_bool(items: list) -> bool | None:
    if not items:
        return None
    if len(items) > 1:
        raise FHIRPathError("boolean expected, found a collection of several items")
    v = items[0]
    return v if type(v) is bool else True


def _truthy(items: list) -> bool:
    if len(items) != 1:
        return False
    v = items[0]
    return v is True or type(v) is not bool


def _norm_num(v: Any) -> Any:
    if type(v) is float:
        return Decimal(repr(v))
    if type(v) is int:
        return Decimal(v)
    return v


def _equal(a: list, b: list) -> bool | None:
    if not a or not b:
        return None
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if type(x) is bool or type(y) is bool:
            if x is not y:
                return False
        elif type(x) in (int, float, Decimal) and type(y) in (int, float, Decimal):
            if _norm_num(x) != _norm_num(y):
                return False
        elif x != y:
            return False
    return True


def _equivalent(a: list, b: list) -> bool:
    if not a and not b:
        return True
    if len(a) != len(b):
        return False

    def norm(v: Any) -> Any:
        if type(v) is str:
            return " ".join(v.lower().split())
        return _norm_num(v) if type(v) in (int, float) else v

    return sorted(map(repr, map(norm, a))) == sorted(map(repr, map(norm, b)))


def _compare(op: str, a: list, b: list) -> list:
    if not a or not b:
        return []
    if len(a) > 1 or len(b) > 1:
        raise FHIRPathError("comparison of collections with several items")
    x, y = a[0], b[0]
    if type(x) in (int, float, Decimal) and type(y) in (int, float, Decimal):
        x, y = _norm_num(x), _norm_num(y)
    elif type(x) is not type(y) or type(x) is not str:
        return []
    if op == "<":
        return [x < y]
    if op == ">":
        return [x > y]
    if op == "<=":
        return [x <= y]
    return [x >= y]


def _union(a: list, b: list) -> list:
    if not a:
        return list(b)
    out = list(a)
    seen = {id(x) for x in a}
    for x in b:
        if id(x) not in seen and (type(x) is dict or x not in out):
            out.append(x)
            seen.add(id(x))
    return out


def _literal_type_arg(args: list[tuple], fname: str) -> str:
    if len(args) != 1 or args[0][0] not in ("ident", "member"):
        raise FHIRPathError(f"{fname}() needs one type name")
    node = args[0]
    return _type_name(node[1] if node[0] == "ident" else node[2])


class _Compiler:
    def __init__(self, expr: str):
        self.expr = expr

    def compile(self, node: tuple) -> Node:
        kind = node[0]
        method = getattr(self, "c_" + kind, None)
        if method is None:
            raise FHIRPathError(f"unsupported construct {kind!r} in {self.expr!r}")
        return method(node)

    # -- terms
    def c_lit(self, node: tuple) -> Node:
        value = node[1]
        return lambda focus, root: list(value)

    def c_var(self, node: tuple) -> Node:
        name = node[1]
        if name == "$this":
            return lambda focus, root: focus
        if name in ("%resource", "%rootResource", "%context"):
            return lambda focus, root: [root]
        raise FHIRPathError(f"unsupported variable {name!r} in {self.expr!r}")

    def c_ident(self, node: tuple) -> Node:
        name = node[1]
        if name[:1].isupper():
            # A leading type name filters the context: Patient.name on a Patient.
            if name in ("Resource", "DomainResource"):

                def any_resource(focus: list, root: Any) -> list:
                    return [x for x in focus if type(x) is dict and "resourceType" in x and is_type(x, name)]

                return any_resource

            def of_type(focus: list, root: Any) -> list:
                return [x for x in focus if type(x) is dict and x.get("resourceType") == name]

            return of_type
        nav = _make_nav(name)
        return lambda focus, root: nav(focus)

    def c_member(self, node: tuple) -> Node:
        base = self.compile(node[1])
        nav = _make_nav(node[2])
        return lambda focus, root: nav(base(focus, root))

    def c_index(self, node: tuple) -> Node:
        base = self.compile(node[1])
        idx_node = node[2]
        if idx_node[0] == "lit" and len(idx_node[1]) == 1 and type(idx_node[1][0]) is int:
            n = idx_node[1][0]
            return lambda focus, root: base(focus, root)[n : n + 1] if n >= 0 else []
        idx = self.compile(idx_node)

        def dyn(focus: list, root: Any) -> list:
            items = base(focus, root)
            i = idx(focus, root)
            if len(i) != 1 or type(i[0]) is not int or i[0] < 0:
                return []
            return items[i[0] : i[0] + 1]

        return dyn

    # -- type operators
    def _typed(self, operand: tuple, type_: str) -> Node:
        if operand[0] in ("member", "ident") and not (operand[0] == "ident" and operand[1][:1].isupper()):
            name = operand[2] if operand[0] == "member" else operand[1]
            nav = _make_typed_nav(name, type_)
            if nav is not None:
                if operand[0] == "member":
                    base = self.compile(operand[1])
                    return lambda focus, root: nav(base(focus, root))
                return lambda focus, root: nav(focus)
        inner = self.compile(operand)
        return lambda focus, root: [x for x in inner(focus, root) if is_type(x, type_)]

    def c_as(self, node: tuple) -> Node:
        return self._typed(node[1], node[2])

    def c_is(self, node: tuple) -> Node:
        inner = self.compile(node[1])
        type_ = node[2]

        def is_(focus: list, root: Any) -> list:
            items = inner(focus, root)
            if not items:
                return []
            if len(items) > 1:
                raise FHIRPathError("'is' applied to a collection of several items")
            return [is_type(items[0], type_)]

        return is_

    # -- binary operators
    def c_binop(self, node: tuple) -> Node:
        op = node[1]
        left = self.compile(node[2])
        right = self.compile(node[3])
        if op == "|":
            return lambda focus, root: _union(left(focus, root), right(focus, root))
        if op == "=":

            def eq(focus: list, root: Any) -> list:
                r = _equal(left(focus, root), right(focus, root))
                return [] if r is None else [r]

            return eq
        if op == "!=":

            def ne(focus: list, root: Any) -> list:
                r = _equal(left(focus, root), right(focus, root))
                return [] if r is None else [not r]

            return ne
        if op == "~":
            return lambda focus, root: [_equivalent(left(focus, root), right(focus, root))]
        if op == "!~":
            return lambda focus, root: [not _equivalent(left(focus, root), right(focus, root))]
        if op in ("<", ">", "<=", ">="):
            return lambda focus, root: _compare(op, left(focus, root), right(focus, root))
        if op in ("and", "or", "xor", "implies"):
            return self._logic(op, left, right)
        if op == "in":

            def in_(focus: list, root: Any) -> list:
                a = left(focus, root)
                if not a:
                    return []
                b = right(focus, root)
                return [any(_equal([a[0]], [y]) for y in b)]

            return in_
        if op == "contains":

            def contains(focus: list, root: Any) -> list:
                b = right(focus, root)
                if not b:
                    return []
                a = left(focus, root)
                return [any(_equal([x], [b[0]]) for x in a)]

            return contains
        raise FHIRPathError(f"operator {op!r} is not supported in {self.expr!r}")

    def _logic(self, op: str, left: Node, right: Node) -> Node:
        def logic(focus: list, root: Any) -> list:
            a = _singleton_bool(left(focus, root))
            b = _singleton_bool(right(focus, root))
            if op == "and":
                if a is False or b is False:
                    return [False]
                return [True] if a is True and b is True else []
            if op == "or":
                if a is True or b is True:
                    return [True]
                return [False] if a is False and b is False else []
            if op == "xor":
                return [] if a is None or b is None else [a != b]
            # implies
            if a is False or b is True:
                return [True]
            if a is True and b is False:
                return [False]
            return []

        return logic

    # -- functions
    def c_call(self, node: tuple) -> Node:
        _, base_node, fname, args = node
        base = self.compile(base_node) if base_node is not None else (lambda focus, root: focus)
        if fname in ("ofType", "as"):
            type_ = _literal_type_arg(args, fname)
            if base_node is None:
                return lambda focus, root: [x for x in focus if is_type(x, type_)]
            return self._typed(base_node, type_)
        if fname == "is":
            type_ = _literal_type_arg(args, fname)
            return self.c_is(("is", base_node if base_node is not None else ("var", "$this"), type_))
        method = getattr(self, "f_" + fname, None)
        if method is None:
            raise FHIRPathError(f"function {fname}() is not supported in {self.expr!r}")
        return method(base, args)

    def _no_args(self, fname: str, args: list) -> None:
        if args:
            raise FHIRPathError(f"{fname}() takes no arguments in {self.expr!r}")

    def f_where(self, base: Node, args: list) -> Node:
        if len(args) != 1:
            raise FHIRPathError(f"where() takes one argument in {self.expr!r}")
        crit_node = args[0]
        # Fast path: where(resolve() is Type)
        if crit_node[0] == "is" and crit_node[1] == ("call", None, "resolve", []):
            type_ = crit_node[2]

            def where_resolve_is(focus: list, root: Any) -> list:
                out = []
                for it in base(focus, root):
                    r = _resolve(it, root)
                    if r is not None and is_type(r, type_):
                        out.append(it)
                return out

            return where_resolve_is
        # Fast path: where(element = 'literal')
        if (
            crit_node[0] == "binop"
            and crit_node[1] == "="
            and crit_node[2][0] == "ident"
            and crit_node[2][1][:1].islower()
            and crit_node[2][1] not in _choices()
            and crit_node[3][0] == "lit"
            and len(crit_node[3][1]) == 1
            and type(crit_node[3][1][0]) is str
        ):
            key = crit_node[2][1]
            literal = crit_node[3][1][0]

            def where_eq(focus: list, root: Any) -> list:
                out = []
                for it in base(focus, root):
                    if type(it) is dict:
                        v = it.get(key)
                        if v == literal or (type(v) is list and len(v) == 1 and v[0] == literal):
                            out.append(it)
                return out

            return where_eq
        crit = self.compile(crit_node)
        return lambda focus, root: [it for it in base(focus, root) if _truthy(crit([it], root))]

    def f_select(self, base: Node, args: list) -> Node:
        if len(args) != 1:
            raise FHIRPathError(f"select() takes one argument in {self.expr!r}")
        proj = self.compile(args[0])

        def select(focus: list, root: Any) -> list:
            out: list = []
            for it in base(focus, root):
                out.extend(proj([it], root))
            return out

        return select

    def f_exists(self, base: Node, args: list) -> Node:
        if not args:
            return lambda focus, root: [bool(base(focus, root))]
        if len(args) != 1:
            raise FHIRPathError(f"exists() takes at most one argument in {self.expr!r}")
        crit = self.compile(args[0])
        return lambda focus, root: [any(_truthy(crit([it], root)) for it in base(focus, root))]

    def f_empty(self, base: Node, args: list) -> Node:
        self._no_args("empty", args)
        return lambda focus, root: [not base(focus, root)]

    def f_hasValue(self, base: Node, args: list) -> Node:
        self._no_args("hasValue", args)

        def has_value(focus: list, root: Any) -> list:
            items = base(focus, root)
            return [len(items) == 1 and type(items[0]) in (str, bool, int, float, Decimal)]

        return has_value

    def f_not(self, base: Node, args: list) -> Node:
        self._no_args("not", args)

        def not_(focus: list, root: Any) -> list:
            b = _singleton_bool(base(focus, root))
            return [] if b is None else [not b]

        return not_

    def f_first(self, base: Node, args: list) -> Node:
        self._no_args("first", args)
        return lambda focus, root: base(focus, root)[:1]

    def f_last(self, base: Node, args: list) -> Node:
        self._no_args("last", args)
        return lambda focus, root: base(focus, root)[-1:]

    def f_count(self, base: Node, args: list) -> Node:
        self._no_args("count", args)
        return lambda focus, root: [len(base(focus, root))]

    def f_resolve(self, base: Node, args: list) -> Node:
        self._no_args("resolve", args)

        def resolve(focus: list, root: Any) -> list:
            out = []
            for it in base(focus, root):
                r = _resolve(it, root)
                if r is not None:
                    out.append(r)
            return out

        return resolve

    def f_extension(self, base: Node, args: list) -> Node:
        if len(args) != 1 or args[0][0] != "lit" or len(args[0][1]) != 1 or type(args[0][1][0]) is not str:
            raise FHIRPathError(f"extension() needs one URL string literal in {self.expr!r}")
        url = args[0][1][0]

        def extension(focus: list, root: Any) -> list:
            out = []
            for it in base(focus, root):
                if type(it) is dict:
                    for ext in it.get("extension") or ():
                        if type(ext) is dict and ext.get("url") == url:
                            out.append(ext)
            return out

        return extension


@functools.lru_cache(maxsize=4096)
def compile_expression(expr: str) -> Callable[[Any], list]:
    """Compile a FHIRPath expression into ``f(resource) -> list`` (cached by text).

    Raises ``FHIRPathError`` for syntax this evaluator does not support.
    """
    tree = _Parser(expr).parse()
    node = _Compiler(expr).compile(tree)

    def evaluate_resource(resource: Any) -> list:
        return node([resource], resource)

    evaluate_resource.__doc__ = expr
    return evaluate_resource


def evaluate(expr: str, resource: Any) -> list:
    """Evaluate ``expr`` against ``resource`` (compiling it once)."""
    return compile_expression(expr)(resource)
