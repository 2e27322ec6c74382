"""Structural validation of incoming FHIR R4 resources, with es-MX error messages.

Every resource a client creates or updates goes through :func:`validate_resource`, which
checks it against the official FHIR R4 (4.0.1) JSON schema of its type: unknown elements,
JSON types, primitive formats (id, date, dateTime, code, uri...), required bindings (enums)
and required elements. The schema is the reduced, patched copy that
``tools/derive_fhir_schema.py`` writes to ``definitions/fhir-r4-validation.schema.json``
(see that script for what was changed and why); nothing outside the package is read.

Validation uses ``jsonschema-rs`` (Rust): one validator per resource type, compiled on first
use and cached; a valid Patient takes a few microseconds. Nested resources (``contained``,
``Bundle.entry.resource``, ``Bundle.entry.response.outcome``) are validated against their own
type, so error paths stay precise (``Bundle.entry[2].resource.status``).

Not covered (they need more than the JSON schema): FHIRPath invariants other than dom-2 and
dom-4, at-most-one-of choice elements (``deceasedBoolean`` + ``deceasedDateTime``),
alignment of ``given`` / ``_given`` arrays, profiles, terminology bindings other than the
required-binding enums, and reference resolution.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Any, Iterator

import jsonschema_rs
import orjson

from expediente.fhir.resource_types import SERVED, SERVED_TYPES

__all__ = [
    "ValidationIssue",
    "ResourceInvalid",
    "validate_resource",
    "collect_issues",
    "is_valid_id",
    "preload_validators",
    "SCHEMA_RESOURCE",
]

SCHEMA_RESOURCE = "definitions/fhir-r4-validation.schema.json"
CALENDAR_FORMAT = "fhir-calendar-date"

#: Resource types accepted nested (contained, Bundle entries) besides the served ones.
NESTED_ONLY_TYPES = frozenset({"OperationOutcome", "Endpoint"})
#: Types that are not DomainResources (no ``contained``).
_NO_CONTAINED = frozenset({"Bundle", "Binary"})

MAX_ISSUES = 100
MAX_NESTING = 8  # Bundle inside Bundle inside ...

_ID_RE = re.compile(r"[A-Za-z0-9\-\.]{1,64}")


@dataclass(frozen=True, slots=True)
class ValidationIssue:
    """One problem found in a resource.

    path: FHIRPath-style location, e.g. ``Patient.name[0].family``; ``""`` for the whole body.
    message: human-readable explanation in Spanish (es-MX).
    code: FHIR IssueType code (structure, required, value, invariant, not-supported).
    """

    path: str
    message: str
    code: str


class ResourceInvalid(Exception):
    """The resource is not valid FHIR R4; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ValidationIssue]):
        self.issues = list(issues)
        shown = "; ".join(i.message for i in self.issues[:3])
        if len(self.issues) > 3:
            shown += f" (y {len(self.issues) - 3} problema(s) más)"
        super().__init__(shown or "Recurso inválido")

    def to_operation_outcome(self) -> dict[str, Any]:
        """The issues as a FHIR OperationOutcome resource (dict)."""
        out = []
        for i in self.issues:
            entry: dict[str, Any] = {
                "severity": "error",
                "code": i.code,
                "details": {"text": i.message},
                "diagnostics": i.message,
            }
            if i.path:
                entry["expression"] = [i.path]
            out.append(entry)
        return {"resourceType": "OperationOutcome", "issue": out}


def is_valid_id(value: object) -> bool:
    """FHIR's id rule: 1 to 64 characters among ``A-Z a-z 0-9 - .``."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


# --------------------------------------------------------------------------- schema / cache

_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _is_calendar_date(value: str) -> bool:
    """The day exists in its month (date, dateTime, instant); the pattern checks the rest."""
    if len(value) < 10:
        return True
    try:
        year, month, day = int(value[0:4]), int(value[5:7]), int(value[8:10])
    except ValueError:
        return True  # malformed: the pattern reports it
    if not 1 <= month <= 12 or day <= _DAYS_IN_MONTH[month - 1]:
        return True
    return month == 2 and day == 29 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


_lock = threading.Lock()
_schema: dict[str, Any] | None = None
_validators: dict[str, Any] = {}


def _load_schema() -> dict[str, Any]:
    global _schema
    if _schema is None:
        data = (resources.files("expediente.fhir") / SCHEMA_RESOURCE).read_bytes()
        _schema = orjson.loads(data)
    return _schema


def _validator(resource_type: str):
    v = _validators.get(resource_type)
    if v is None:
        with _lock:
            v = _validators.get(resource_type)
            if v is None:
                schema = _load_schema()
                v = jsonschema_rs.Draft6Validator(
                    {"$ref": "#/definitions/" + resource_type, "definitions": schema["definitions"]},
                    formats={CALENDAR_FORMAT: _is_calendar_date},
                    validate_formats=True,
                )
                _validators[resource_type] = v
    return v


def preload_validators() -> None:
    """Compile every validator now (e.g. at server start) instead of on first use."""
    for t in (*SERVED_TYPES, *sorted(NESTED_ONLY_TYPES)):
        _validator(t)


# --------------------------------------------------------------------------- public entry points


def validate_resource(resource: dict) -> None:
    """Raise :class:`ResourceInvalid` unless ``resource`` is a structurally valid FHIR R4
    resource of a type this server serves."""
    issues = collect_issues(resource)
    if issues:
        raise ResourceInvalid(issues)


def collect_issues(resource: object) -> list[ValidationIssue]:
    """Like :func:`validate_resource` but returns the issues (empty list: valid)."""
    issues: list[ValidationIssue] = []
    if not isinstance(resource, dict):
        issues.append(ValidationIssue(
            "", f"El recurso debe ser un objeto JSON, se recibió {_kind(resource)}", "structure"))
        return issues
    rtype = resource.get("resourceType")
    if rtype is None:
        issues.append(ValidationIssue(
            "resourceType", "Falta el elemento obligatorio resourceType", "required"))
        return issues
    if not isinstance(rtype, str):
        issues.append(ValidationIssue(
            "resourceType",
            f"resourceType debe ser una cadena de texto, se recibió {_kind(rtype)}", "structure"))
        return issues
    if rtype not in SERVED:
        issues.append(ValidationIssue(
            "resourceType", f"Tipo de recurso desconocido o no soportado: {_q(rtype)}",
            "not-supported"))
        return issues
    _check(resource, rtype, rtype, issues, depth=0)
    return issues[:MAX_ISSUES]


# --------------------------------------------------------------------------- internals


def _check(resource: dict, rtype: str, base: str, issues: list[ValidationIssue], depth: int) -> None:
    """Validate one resource whose resourceType ``rtype`` is known to be accepted."""
    if depth > MAX_NESTING:
        issues.append(ValidationIssue(
            base, f"Anidamiento de recursos demasiado profundo en {base}", "structure"))
        return

    id_path = None
    if "id" in resource and not is_valid_id(resource["id"]):
        id_path = base + ".id"
        value = resource["id"]
        if isinstance(value, str):
            issues.append(ValidationIssue(id_path, f"Valor inválido para {id_path}: {_q(value)} "
                                          + _PATTERN_HINTS["id"], "value"))
        else:
            issues.append(ValidationIssue(
                id_path, f"Tipo inválido para {id_path}: se esperaba una cadena de texto (id), "
                f"se recibió {_kind(value)}", "structure"))

    validator = _validator(rtype)
    try:
        if not validator.is_valid(resource):
            for err in validator.iter_errors(resource):
                for issue in _issues_from_error(err, resource, base):
                    if issue.path != id_path:
                        issues.append(issue)
                if len(issues) >= MAX_ISSUES:
                    return
    except (ValueError, TypeError, OverflowError) as exc:
        # Not JSON data (non-string keys, datetime objects...): jsonschema-rs cannot read it.
        issues.append(ValidationIssue(
            base, f"El recurso {base} contiene valores que no son JSON: {exc}", "structure"))
        return

    for path, nested, in_contained in _nested_resources(resource, rtype, base):
        ntype = nested.get("resourceType")
        if not isinstance(ntype, str):
            continue  # the schema already reported it
        if ntype not in SERVED and ntype not in NESTED_ONLY_TYPES:
            issues.append(ValidationIssue(
                path + ".resourceType",
                f"Tipo de recurso desconocido o no soportado en {path}: {_q(ntype)}",
                "not-supported"))
            continue
        if in_contained:
            if "contained" in nested:
                issues.append(ValidationIssue(
                    path + ".contained",
                    f"Un recurso contenido no puede tener a su vez recursos contenidos ({path}, dom-2)",
                    "invariant"))
            meta = nested.get("meta")
            if isinstance(meta, dict) and ("versionId" in meta or "lastUpdated" in meta):
                issues.append(ValidationIssue(
                    path + ".meta",
                    f"Un recurso contenido no puede tener meta.versionId ni meta.lastUpdated "
                    f"({path}, dom-4)", "invariant"))
        _check(nested, ntype, path, issues, depth + 1)
        if len(issues) >= MAX_ISSUES:
            return


def _nested_resources(resource: dict, rtype: str, base: str) -> Iterator[tuple[str, dict, bool]]:
    if rtype not in _NO_CONTAINED:
        contained = resource.get("contained")
        if isinstance(contained, list):
            for i, item in enumerate(contained):
                if isinstance(item, dict):
                    yield f"{base}.contained[{i}]", item, True
    if rtype == "Bundle":
        entries = resource.get("entry")
        if isinstance(entries, list):
            for i, entry in enumerate(entries):
                if not isinstance(entry, dict):
                    continue
                res = entry.get("resource")
                if isinstance(res, dict):
                    yield f"{base}.entry[{i}].resource", res, False
                response = entry.get("response")
                if isinstance(response, dict) and isinstance(response.get("outcome"), dict):
                    yield f"{base}.entry[{i}].response.outcome", response["outcome"], False


def _fhir_path(base: str, segments) -> str:
    out = [base]
    for s in segments:
        out.append(f"[{s}]" if isinstance(s, int) else "." + s)
    return "".join(out)


def _value_at(instance: Any, segments) -> Any:
    for s in segments:
        try:
            instance = instance[s]
        except (KeyError, IndexError, TypeError):
            return None
    return instance


def _schema_node(schema_path) -> tuple[str | None, dict]:
    """The schema object holding the failing keyword, and the definition it belongs to
    (None when the keyword sits on a property rather than on a type definition)."""
    node: Any = _load_schema()
    for s in schema_path[:-1]:
        node = node[s]
    type_name = None
    if len(schema_path) == 3 and schema_path[0] == "definitions":
        type_name = schema_path[1].removeprefix("nullable_")
    return type_name, node


def _issues_from_error(err, instance: dict, base: str) -> Iterator[ValidationIssue]:
    kind = err.kind
    name = kind.name
    segments = err.instance_path
    path = _fhir_path(base, segments)
    value = _value_at(instance, segments)
    schema_path = err.schema_path
    fhir_type, node = _schema_node(schema_path)

    if name == "additionalProperties":
        for key in kind.unexpected:
            yield ValidationIssue(f"{path}.{key}", f"Elemento desconocido '{key}' en {path}",
                                  "structure")
    elif name == "required":
        yield ValidationIssue(f"{path}.{kind.property}",
                              f"Falta el elemento obligatorio {path}.{kind.property}", "required")
    elif name == "anyOf" and "x-element" in node:
        element = f"{path}.{node['x-element']}"
        yield ValidationIssue(element, f"Falta el elemento obligatorio {element}", "required")
    elif name == "enum":
        options = ", ".join(str(o) for o in kind.options if o is not None)
        yield ValidationIssue(path, f"{path} debe ser uno de: {options}", "value")
    elif name == "type":
        expected = [t for t in kind.types if t != "null"]
        if isinstance(value, int) and not isinstance(value, bool) and (
                "number" in expected or "integer" in expected):
            # jsonschema-rs reads integers beyond 64 bits as null
            yield ValidationIssue(
                path, f"Valor inválido para {path}: el número {_q(value)} está fuera del rango "
                "admitido", "value")
            return
        yield ValidationIssue(
            path,
            f"Tipo inválido para {path}: se esperaba {_expected(expected, fhir_type, value)}, "
            f"se recibió {_kind(value)}",
            "structure")
    elif name == "pattern":
        hint = _PATTERN_HINTS.get(fhir_type or "")
        if fhir_type in ("string", "markdown"):
            msg = f"Valor inválido para {path}: {hint}"
        elif hint:
            msg = f"Valor inválido para {path}: {_q(value)} {hint}"
        else:
            msg = f"Valor inválido para {path}: {_q(value)} no tiene el formato esperado"
        yield ValidationIssue(path, msg, "value")
    elif name == "format":
        yield ValidationIssue(
            path, f"Valor inválido para {path}: {_q(value)} no es una fecha de calendario válida "
            "(ese día no existe)", "value")
    elif name in ("minimum", "maximum"):
        hint = _RANGE_HINTS.get(fhir_type or "", "está fuera del rango permitido")
        yield ValidationIssue(path, f"Valor inválido para {path}: {_q(value)} {hint}", "value")
    elif name == "minItems":
        yield ValidationIssue(path, f"{path} no puede ser una lista vacía (omita el elemento)",
                              "structure")
    elif name == "minProperties":
        yield ValidationIssue(path, f"{path} no puede ser un objeto vacío (omita el elemento)",
                              "structure")
    elif name == "const":
        yield ValidationIssue(path, f"Valor inválido para {path}: {_q(value)}", "value")
    else:
        yield ValidationIssue(path, f"Valor inválido para {path}: {err.message}", "invalid")


_PATTERN_HINTS = {
    "date": "no es una fecha FHIR válida (AAAA, AAAA-MM o AAAA-MM-DD)",
    "dateTime": "no es una fecha/hora FHIR válida (AAAA, AAAA-MM, AAAA-MM-DD o "
                "AAAA-MM-DDThh:mm:ss con zona horaria, p. ej. 2024-01-31T10:30:00-06:00)",
    "instant": "no es un instante FHIR válido (AAAA-MM-DDThh:mm:ss con zona horaria, "
               "p. ej. 2024-01-31T10:30:00-06:00)",
    "time": "no es una hora FHIR válida (hh:mm:ss)",
    "id": "no es un id FHIR válido (1 a 64 caracteres: letras, dígitos, '-' o '.')",
    "code": "no es un código FHIR válido (sin espacios al inicio o al final ni espacios dobles)",
    "uri": "no es un URI válido (no puede estar vacío ni contener espacios)",
    "url": "no es un URL válido (no puede estar vacío ni contener espacios)",
    "canonical": "no es un URL canónico válido (no puede estar vacío ni contener espacios)",
    "oid": "no es un OID válido (urn:oid:...)",
    "uuid": "no es un UUID válido (urn:uuid:... en minúsculas)",
    "base64Binary": "no es base64 válido",
    "xhtml": "no es una narrativa XHTML válida (debe ser un elemento <div>)",
    "string": "la cadena de texto no puede estar vacía ni contener solo espacios",
    "markdown": "el texto no puede estar vacío ni contener solo espacios",
}

_RANGE_HINTS = {
    "integer": "está fuera del rango de integer (-2147483648 a 2147483647)",
    "positiveInt": "no es un entero positivo válido (1 a 2147483647)",
    "unsignedInt": "no es un entero no negativo válido (0 a 2147483647)",
}

_JSON_TYPE_ES = {
    "array": "una lista (arreglo JSON)",
    "boolean": "true o false",
    "integer": "un número entero",
    "number": "un número",
    "string": "una cadena de texto",
}


def _expected(types: list[str], fhir_type: str | None, value: Any) -> str:
    parts = []
    for t in types:
        if t == "object":
            if fhir_type == "ResourceList":
                parts.append("un recurso FHIR (objeto con resourceType)")
            elif fhir_type:
                parts.append(f"un objeto {fhir_type}")
            else:
                parts.append("un objeto")
        elif t in ("string", "number", "integer", "boolean") and fhir_type:
            parts.append(f"{_JSON_TYPE_ES[t]} ({fhir_type})")
        else:
            parts.append(_JSON_TYPE_ES.get(t, t))
    return " o ".join(parts) or "otro tipo"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "un valor booleano"
    if isinstance(value, (int, float)):
        return "un número"
    if isinstance(value, str):
        return "una cadena de texto"
    if isinstance(value, (list, tuple)):
        return "una lista"
    if isinstance(value, dict):
        return "un objeto"
    return type(value).__name__


def _q(value: Any) -> str:
    """A value quoted for a message, truncated."""
    if isinstance(value, str):
        text = value if len(value) <= 80 else value[:77] + "..."
        return "'" + text + "'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
