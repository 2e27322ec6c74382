"""FHIR batch and transaction Bundles (POST /fhir), processed through the ResourceStore.

Transaction: all or nothing. Every entry runs inside ONE job of the store's group committer (one
database transaction on SQLite or PostgreSQL) in the order the specification sets: DELETE, then
POST, then PUT, then GET/HEAD; the response lists the entries in their original order. Any entry
that fails fails the whole Bundle: nothing is stored and the answer is that entry's
OperationOutcome, its status, and ``Bundle.entry[i]`` in every issue.

Before the job, without the write lock: the Bundle's shape and every entry are checked, resources
validated, ids assigned to POST entries, references to the Bundle's fullUrls (``urn:uuid:``,
``urn:oid:`` or absolute) rewritten to ``Type/id``, and search values extracted. Conditional
references (``Practitioner?identifier=system|value``) and the targets of conditional writes are
looked up ahead on the read pool so extraction can happen then too; inside the job each is
resolved again (it must hold in the transaction) and an entry whose references came out
differently is prepared again there.

Within POST (and within PUT), entries without conditional references nor references to a
conditional write's fullUrl run first, in Bundle order, then the others, in Bundle order: so a
conditional reference can resolve to a resource that the same transaction creates.

Batch: each entry is checked and run on its own, as a transaction of one entry; failures are
reported in its ``response.outcome`` and do not affect the others. Entries of a batch may not
depend on each other (FHIR): a reference to another entry's fullUrl is that entry's error; a
reference to its own fullUrl and conditional references are resolved.

Access: every write and read goes through the store's gate inside the job. A denial anywhere
rolls the job back (nothing stored), then the denied access's audit entries are recorded in a
transaction of their own and the denial (403) is the answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl

import orjson
import sqlalchemy as sa

from expediente.fhir.errors import FhirError, Issue, operation_outcome
from expediente.fhir.resource_types import SERVED
from expediente.fhir.store import (
    ID_RE,
    RESULT_PARAMS,
    Caller,
    ResourceStore,
    Stored,
    WriteResult,
    _check_writable,
    _etag_version,
    _parse_conditional,
    _prepare,
    _Prepared,
    _validated_client,
    check_id,
    instant,
    new_id,
)
from expediente.security.access import Access, AccessGate
from expediente.security.principal import Principal

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE"})
_URN_PREFIXES = ("urn:uuid:", "urn:oid:")
_CONDITIONAL_REFERENCE = re.compile(r"^([A-Z][A-Za-z]{0,63})\?(.*)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class BundleOptions:
    base: str  # the FHIR endpoint's public base, e.g. https://host/fhir
    max_entries: int
    page_size: int = 50  # _count of a search entry when it names none
    page_size_max: int = 500
    prefer: str = ""  # the request's Prefer header (return=minimal | representation | OperationOutcome)
    profiles: str = "mx"  # Mexican profiles mode of the store (settings.profiles)


def process_bundle(store: ResourceStore, caller: Caller, body: dict, options: BundleOptions) -> dict:
    """Run a batch or transaction Bundle; its batch-response or transaction-response Bundle.
    Raises FhirError for a malformed Bundle and for a transaction that failed."""
    kind, raw_entries = _entries_of(body, options.max_entries)
    if kind == "transaction":
        return _response("transaction-response", _transaction(store, caller, raw_entries, options))
    return _response("batch-response", _batch(store, caller, raw_entries, options))


# ------------------------------------------------------------------------------ errors


def _invalid(diagnostics: str, expression: str | None = None, code: str = "invalid") -> FhirError:
    return FhirError.of(400, diagnostics, code, expression)


class EntryError(FhirError):
    """A FhirError already attributed to one entry of the Bundle."""


def at_entry(index: int, exc: FhirError) -> FhirError:
    """``exc`` as the error of Bundle.entry[index]: every issue names the entry."""
    if isinstance(exc, EntryError):
        return exc
    where = f"Bundle.entry[{index}]"
    issues = [Issue(f"{where}: {i.diagnostics}", i.code, i.severity, _entry_path(where, i.expression)) for i in exc.issues]
    return EntryError(exc.status, issues, dict(exc.headers))


def _entry_path(where: str, expression: str | None) -> str:
    """An issue's expression relative to the entry: 'request.url', or the resource's 'Patient.name[0]'."""
    if not expression:
        return where
    if expression.startswith("Bundle."):
        return expression
    head, _, rest = expression.partition(".")
    if head[:1].isupper():  # FHIRPath from the resource's type
        return f"{where}.resource" + (f".{rest}" if rest else "")
    return f"{where}.{expression}"


class _EntryFailed(Exception):
    """An entry's FhirError, raised out of the job so that the whole job rolls back."""

    def __init__(self, index: int, error: FhirError):
        super().__init__(str(error))
        self.index = index
        self.error = error


class _Denied(Exception):
    """An access denied inside a Bundle's job: the job rolls back, then the denial is recorded."""

    def __init__(self, accesses: tuple[Access, ...], error: FhirError):
        super().__init__(str(error))
        self.accesses = accesses
        self.error = error
        self.index = -1


class _DenyingGate:
    """The store's gate, deciding and recording as usual, but a denial raises ``_Denied`` so the
    Bundle's job rolls back instead of committing a partial transaction."""

    def __init__(self, gate: AccessGate):
        self._gate = gate

    def __getattr__(self, name: str):  # grant, record, row_rule: as the store's gate
        return getattr(self._gate, name)

    def authorize_in(self, conn: sa.Connection, principal: Principal, *accesses: Access, **options) -> FhirError | None:
        denied = self._gate.authorize_in(conn, principal, *accesses, **options)
        if denied is not None:
            raise _Denied(accesses, denied)
        return None


def _raise_denied(denied: FhirError | None) -> None:
    if denied is not None:  # only with a gate that returns denials instead of raising them
        raise denied


# ------------------------------------------------------------------------ the Bundle's shape


def _entries_of(body: dict, max_entries: int) -> tuple[str, list]:
    """The Bundle's type (batch or transaction) and its entries, within the size limit."""
    if body.get("resourceType") != "Bundle":
        found = str(body.get("resourceType"))[:60]
        raise _invalid(f"POST /fhir espera un Bundle de tipo batch o transaction, no '{found}'", "resourceType")
    kind = body.get("type")
    if kind not in ("batch", "transaction"):
        raise _invalid(f"Bundle.type debe ser 'batch' o 'transaction' (llegó '{str(kind)[:40]}')", "Bundle.type", "value")
    entries = body.get("entry", [])
    if not isinstance(entries, list):
        raise _invalid("Bundle.entry debe ser una lista de entradas", "Bundle.entry", "structure")
    if len(entries) > max_entries:
        raise FhirError.of(
            413,
            f"El Bundle trae {len(entries)} entradas y este servidor acepta como máximo {max_entries}; divídalo en varios",
            "too-costly",
            "Bundle.entry",
        )
    return kind, entries


# ------------------------------------------------------------------------------- entries


@dataclass(slots=True)
class _Slot:
    """A reference inside an entry's resource that the Bundle resolves."""

    holder: dict  # the Reference object; its "reference" is rewritten in place
    key: str  # the fullUrl or the conditional reference ("Type?params") it named
    conditional: bool


@dataclass(slots=True)
class _Entry:
    index: int
    method: str
    res_type: str
    res_id: str | None = None
    version: int | None = None
    history: bool = False
    query: str | None = None  # what follows '?' in request.url; None without '?'
    full_url: str | None = None
    resource: dict | None = None
    condition: str | None = None  # conditional write: If-None-Exist, or the PUT/DELETE search
    conditions: list[tuple[str, str]] | None = None
    params: list[tuple[str, str]] | None = None  # search entry
    count: int = 0  # search entry: most matches answered
    expected: int | None = None  # If-Match version
    new_id: str | None = None  # the id a POST (or conditional PUT) creates with
    slots: list[_Slot] = field(default_factory=list)
    prepared: _Prepared | None = None  # made before the job...
    prepared_as: tuple | None = None  # ...for this (id, reference values)

    @property
    def condition_key(self) -> str:
        return f"{self.res_type}?{self.condition}"


def _parse_entry(index: int, raw, options: BundleOptions) -> _Entry:
    """One entry, checked: its request, its resource (validated) and its fullUrl."""
    if not isinstance(raw, dict):
        raise _invalid("Cada entrada del Bundle debe ser un objeto JSON", code="structure")
    request = raw.get("request")
    if not isinstance(request, dict):
        raise _invalid(
            "La entrada no trae request (method y url); en un batch o transaction cada entrada lo requiere",
            "request",
            "required",
        )
    method = _method(request.get("method"))
    res_type, res_id, version, history, query = _parse_url(request.get("url"), options.base)
    entry = _Entry(index, method, res_type, res_id, version, history, query, _full_url(raw))
    _CHECKS[method](entry, raw, request, options)
    return entry


def _method(value) -> str:
    if value == "PATCH":
        raise FhirError.of(
            501, "PATCH aún no está disponible en este servidor; envíe el recurso completo con PUT", "not-supported", "request.method"
        )
    if value not in METHODS:
        raise _invalid(
            f"Método desconocido en request.method: '{str(value)[:20]}' (use GET, HEAD, POST, PUT o DELETE)",
            "request.method",
            "value",
        )
    return value


def _full_url(raw: dict) -> str | None:
    value = raw.get("fullUrl")
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise _invalid("fullUrl debe ser un texto no vacío (una URL o urn:uuid:...)", "fullUrl", "value")
    return value


def _parse_url(url, base: str) -> tuple[str, str | None, int | None, bool, str | None]:
    """request.url, relative ('Patient/123') or under this server's base: (type, id, version,
    history, query)."""
    if not isinstance(url, str) or not url.strip():
        raise _invalid("request.url está vacío; indique p. ej. 'Patient' o 'Patient/123'", "request.url", "required")
    text = url.strip()
    if text.startswith(("http://", "https://")):
        if not text.startswith(base + "/"):
            raise _invalid(f"request.url '{text[:120]}' no pertenece a este servidor ({base})", "request.url")
        text = text[len(base) + 1 :]
    path, mark, query = text.lstrip("/").partition("?")
    res_type, *rest = path.split("/")
    if res_type not in SERVED:
        raise _invalid(
            f"request.url '{text[:120]}': tipo de recurso desconocido o no soportado ('{res_type[:60]}')",
            "request.url",
            "not-supported",
        )
    res_id = _url_id(rest.pop(0), text) if rest and rest[0] != "_history" else None
    history = bool(rest) and rest[0] == "_history"
    version = _url_version(rest[1], text) if history and len(rest) > 1 else None
    if len(rest) > (2 if history else 0):
        raise _invalid(f"request.url '{text[:120]}' no es una interacción que un Bundle admita", "request.url", "not-supported")
    return res_type, res_id, version, history, (query if mark else None)


def _url_id(value: str, url: str) -> str:
    if not ID_RE.match(value):
        raise _invalid(
            f"request.url '{url[:120]}': identificador lógico inválido (1 a 64 caracteres: letras, dígitos, '-' y '.')",
            "request.url",
        )
    return value


def _url_version(value: str, url: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        raise _invalid(f"request.url '{url[:120]}': versión inválida (debe ser un número entero)", "request.url")
    return int(value)


def _bad_url(entry: _Entry, expected: str) -> FhirError:
    return _invalid(f"{entry.method} en un Bundle lleva {expected} en request.url", "request.url")


def _check_post(entry: _Entry, raw: dict, request: dict, options: BundleOptions) -> None:
    if entry.res_id is not None or entry.history or entry.query is not None:
        raise _bad_url(entry, "solo el tipo de recurso (p. ej. 'Patient')")
    entry.resource = _resource_of(entry, raw, options)
    if_none_exist = request.get("ifNoneExist")
    if if_none_exist is not None:
        _set_condition(entry, _text(if_none_exist, "request.ifNoneExist"))
    entry.new_id = new_id()


def _check_put(entry: _Entry, raw: dict, request: dict, options: BundleOptions) -> None:
    if entry.history or (entry.res_id is None) == (entry.query is None):
        raise _bad_url(entry, "'Tipo/id' o 'Tipo?condición'")
    entry.resource = _resource_of(entry, raw, options)
    body_id = entry.resource.get("id")
    if entry.res_id is not None and body_id != entry.res_id:
        raise _invalid(
            f"El id del recurso ('{body_id}') no coincide con el de request.url ('{entry.res_id}')", f"{entry.res_type}.id"
        )
    if entry.query is not None:
        _set_condition(entry, entry.query)
        if body_id is not None:
            check_id(body_id)
        entry.new_id = body_id or new_id()
    entry.expected = _if_match(request)


def _check_delete(entry: _Entry, raw: dict, request: dict, options: BundleOptions) -> None:
    if entry.history or (entry.res_id is None) == (entry.query is None):
        raise _bad_url(entry, "'Tipo/id' o 'Tipo?condición'")
    _check_writable(entry.res_type)
    if entry.query is not None:
        _set_condition(entry, entry.query)
    entry.expected = _if_match(request)


def _check_read(entry: _Entry, raw: dict, request: dict, options: BundleOptions) -> None:
    if entry.history and entry.version is None:
        raise _invalid(
            "El historial no está disponible dentro de un Bundle; pídalo con GET .../_history", "request.url", "not-supported"
        )
    if entry.res_id is None:
        pairs = parse_qsl(entry.query or "", keep_blank_values=True)
        entry.params = [(k, v) for k, v in pairs if k not in RESULT_PARAMS]
        entry.count = _search_count(dict(pairs).get("_count"), options)


_CHECKS = {"POST": _check_post, "PUT": _check_put, "DELETE": _check_delete, "GET": _check_read, "HEAD": _check_read}


def _resource_of(entry: _Entry, raw: dict, options: BundleOptions) -> dict:
    _check_writable(entry.res_type)
    resource = raw.get("resource")
    if not isinstance(resource, dict):
        raise _invalid(f"{entry.method} requiere el recurso en la entrada (resource)", "resource", "required")
    _validated_client(resource, entry.res_type, options.profiles)
    return resource


def _text(value, expression: str) -> str:
    if not isinstance(value, str):
        raise _invalid(f"{expression} debe ser un texto", expression, "value")
    return value


def _set_condition(entry: _Entry, condition: str) -> None:
    text = condition.strip()
    if text.startswith(entry.res_type + "?"):  # some clients send 'Type?params'
        text = text[len(entry.res_type) + 1 :]
    entry.condition = text.lstrip("?")
    entry.conditions = _parse_conditional(entry.res_type, entry.condition)


def _if_match(request: dict) -> int | None:
    value = request.get("ifMatch")
    return None if value is None else _etag_version(_text(value, "request.ifMatch"))


def _search_count(raw: str | None, options: BundleOptions) -> int:
    if raw is None:
        return options.page_size
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6:
        raise _invalid(f"_count inválido: '{raw[:20]}' (se espera un entero no negativo)", "request.url")
    return min(int(raw), options.page_size_max)


# ------------------------------------------------------------------------------ references


@dataclass(slots=True)
class _Link:
    """What a fullUrl of the Bundle stands for."""

    target: str  # "Type/id" its references become: a guess until a conditional write has run
    certain: bool


def _links(entries: list[_Entry]) -> dict[str, _Link]:
    """The fullUrls that references may name: those of POST and PUT entries."""
    links = {}
    for e in entries:
        if e.full_url is not None and e.method in ("POST", "PUT"):
            target = e.new_id if e.method == "POST" else (e.res_id or e.new_id)
            links[e.full_url] = _Link(f"{e.res_type}/{target}", e.condition is None)
    return links


def _check_unique_full_url(entry: _Entry, seen: dict[str, int]) -> None:
    if entry.full_url is None:
        return
    first = seen.setdefault(entry.full_url, entry.index)
    if first != entry.index:
        raise _invalid(f"fullUrl '{entry.full_url[:120]}' repetido: ya lo usa Bundle.entry[{first}]", "fullUrl", "duplicate")


def _reference_holders(value, out: list[dict]) -> list[dict]:
    """Every object with a string 'reference' (Reference.reference) inside a resource."""
    if type(value) is dict:
        if type(value.get("reference")) is str:
            out.append(value)
        items = value.values()
    else:
        items = value
    for item in items:
        kind = type(item)
        if kind is dict or kind is list:
            _reference_holders(item, out)
    return out


def _collect_slots(entry: _Entry, links: dict[str, _Link], conditions: dict, elsewhere: frozenset[str] = frozenset()) -> None:
    """The entry's references that name a fullUrl of ``links`` or a conditional reference; a
    urn reference to nothing in ``links`` is an error (``elsewhere``: fullUrls of other batch
    entries). A Bundle resource inside an entry keeps its own references untouched."""
    if entry.resource is None or entry.resource.get("resourceType") == "Bundle":
        return
    for holder in _reference_holders(entry.resource, []):
        ref = holder["reference"]
        if ref in links:
            entry.slots.append(_Slot(holder, ref, False))
        elif ref in elsewhere:
            raise _invalid(
                f"La referencia '{ref[:120]}' apunta a otra entrada del batch; las entradas de un batch son "
                "independientes: use un Bundle de tipo transaction",
                code="business-rule",
            )
        elif ref.startswith(_URN_PREFIXES):
            raise _invalid(f"La referencia '{ref[:120]}' no corresponde al fullUrl de ninguna entrada del Bundle", code="not-found")
        elif (match := _CONDITIONAL_REFERENCE.match(ref)) is not None:
            if ref not in conditions:
                conditions[ref] = _conditional_reference(ref, match)
            entry.slots.append(_Slot(holder, ref, True))


def _conditional_reference(ref: str, match: re.Match) -> tuple[str, list[tuple[str, str]]]:
    res_type, query = match.group(1), match.group(2)
    if res_type not in SERVED:
        raise _invalid(f"Referencia condicional '{ref[:120]}': tipo de recurso desconocido o no soportado", code="not-supported")
    return res_type, _parse_conditional(res_type, query)


def _look_ahead(store: ResourceStore, wanted: dict[str, tuple[int, str, list]]) -> dict[str, str]:
    """Conditions ('Type?params') that match exactly one resource now, outside the transaction:
    a guess that lets extraction run before the job. ``wanted``: condition -> (entry, type, params)."""
    guesses: dict[str, str] = {}
    if not wanted:
        return guesses
    with store.reader.connect() as conn:
        for key, (index, res_type, params) in wanted.items():
            try:
                ids = store.find(res_type, params, conn)
            except FhirError as exc:
                raise at_entry(index, exc) from None
            if len(ids) == 1:
                guesses[key] = f"{res_type}/{ids[0]}"
    return guesses


def _wanted(entries: list[_Entry], links: dict[str, _Link], conditions: dict) -> dict[str, tuple[int, str, list]]:
    """What to look up ahead: every conditional reference, every conditional PUT and every
    conditional create whose fullUrl another entry references."""
    referenced = {s.key for e in entries for s in e.slots if not s.conditional}
    wanted: dict[str, tuple[int, str, list]] = {}
    for e in entries:
        for s in e.slots:
            if s.conditional:
                wanted.setdefault(s.key, (e.index, *conditions[s.key]))
        if e.conditions is not None and (e.method == "PUT" or (e.method == "POST" and e.full_url in referenced)):
            wanted.setdefault(e.condition_key, (e.index, e.res_type, e.conditions))
    return wanted


def _apply_guesses(entries: list[_Entry], links: dict[str, _Link], guesses: dict[str, str]) -> None:
    """Point the fullUrls of conditional writes at their guessed target."""
    for e in entries:
        link = links.get(e.full_url) if e.full_url is not None else None
        if link is not None and not link.certain and e.condition_key in guesses:
            link.target = guesses[e.condition_key]


def _prepare_ahead(entry: _Entry, links: dict[str, _Link], guesses: dict[str, str]) -> None:
    """Rewrite the references and extract the search values before the job, when every
    reference can be known (or guessed) now; otherwise that is left to the job."""
    if entry.resource is None:
        return
    values = tuple(guesses.get(s.key) if s.conditional else links[s.key].target for s in entry.slots)
    if None in values:
        return
    res_id = entry.res_id or entry.new_id
    if entry.method == "PUT" and entry.conditions is not None and entry.condition_key in guesses:
        res_id = guesses[entry.condition_key].partition("/")[2]
    for slot, value in zip(entry.slots, values, strict=True):
        slot.holder["reference"] = value
    entry.prepared, entry.prepared_as = _prepare(entry.resource, res_id), (res_id, values)


def _plan(store: ResourceStore, entries: list[_Entry], links: dict[str, _Link], conditions: dict) -> None:
    """Everything that needs no write lock: look-ahead of conditions, rewriting, extraction."""
    guesses = _look_ahead(store, _wanted(entries, links, conditions))
    _apply_guesses(entries, links, guesses)
    for e in entries:
        _prepare_ahead(e, links, guesses)


# ------------------------------------------------------------------------------- the job


def _groups(entries: list[_Entry], links: dict[str, _Link]) -> list[list[_Entry]]:
    """Processing order: DELETE, POST, PUT, GET/HEAD; within POST and PUT the entries that
    depend on the transaction's outcome (conditional references, references to a conditional
    write) after the others."""

    def depends(e: _Entry) -> bool:
        return any(s.conditional or not links[s.key].certain for s in e.slots)

    def of(*methods: str) -> list[_Entry]:
        return [e for e in entries if e.method in methods]

    posts, puts = of("POST"), of("PUT")
    return [
        of("DELETE"),
        [e for e in posts if not depends(e)],
        [e for e in posts if depends(e)],
        [e for e in puts if not depends(e)],
        [e for e in puts if depends(e)],
        of("GET", "HEAD"),
    ]


class _Run:
    """One attempt at a Bundle's job. All state lives here: the group committer may run a job
    again (alone) after a batch it shared failed."""

    def __init__(self, store: ResourceStore, caller: Caller, conn: sa.Connection, links: dict[str, _Link], conditions: dict):
        self.store = store
        self.caller = caller
        self.conn = conn
        self.links = links
        self.conditions = conditions
        self.resolved: dict[str, str] = {}  # conditional reference -> "Type/id"
        self.settled: dict[str, str] = {}  # fullUrl of a conditional write that has run -> "Type/id"
        self.guessed: dict[str, str] = {}  # fullUrl used before its conditional write ran -> guess
        self.written: dict[tuple[str, str], int] = {}  # (type, id) -> entry that wrote it

    def run(self, groups: list[list[_Entry]]) -> dict[int, object]:
        results: dict[int, object] = {}
        for group in groups:
            self._prefetch(group)
            for entry in group:
                results[entry.index] = self._attempt(entry)
        return results

    def _attempt(self, entry: _Entry):
        try:
            return _PROCESS[entry.method](self, entry)
        except FhirError as exc:
            raise _EntryFailed(entry.index, exc) from None
        except _Denied as denied:
            denied.index = entry.index
            raise

    # -- per method

    def delete(self, e: _Entry) -> Stored | None:
        res_id = e.res_id
        if e.conditions is not None:
            res_id = self.store._match_in(self.conn, e.res_type, e.condition, e.conditions)
            if res_id is None:
                return None
        self._claim(e, e.res_type, res_id)
        stored, denied = self.store._delete_in(self.conn, self.caller, e.res_type, res_id, e.expected)
        _raise_denied(denied)
        return stored

    def post(self, e: _Entry) -> WriteResult:
        prepared = self._prepared(e, e.new_id)
        result, denied = self.store._create_in(self.conn, self.caller, e.res_type, e.new_id, prepared, e.condition, e.conditions)
        _raise_denied(denied)
        if result.created:
            self._claim(e, e.res_type, e.new_id)
        self._settle(e, result.stored)
        return result

    def put(self, e: _Entry) -> WriteResult:
        res_id, exists = e.res_id, True
        if e.conditions is not None:
            res_id, exists = self._put_target(e)
        self._claim(e, e.res_type, res_id)
        prepared = self._prepared(e, res_id)
        if exists:
            result, denied = self.store._update_in(self.conn, self.caller, e.res_type, res_id, prepared, e.expected)
        else:
            result, denied = self.store._put_version(self.conn, self.caller, e.res_type, res_id, prepared, None, "PUT", "create")
        _raise_denied(denied)
        self._settle(e, result.stored)
        return result

    def read(self, e: _Entry) -> Stored | list[Stored]:
        if e.params is not None:
            params = [(k, self._search_value(v)) for k, v in e.params]
            found, denied = self.store._search_in(self.conn, self.caller, e.res_type, params, e.count)
        else:
            found, denied = self.store._read_in(self.conn, self.caller, e.res_type, e.res_id, e.version)
        _raise_denied(denied)
        return found

    # -- helpers

    def _put_target(self, e: _Entry) -> tuple[str, bool]:
        """Conditional update: the one match, else the body's id, else a new id; and whether it
        may already exist (as ResourceStore.conditional_update decides)."""
        found = self.store._match_in(self.conn, e.res_type, e.condition, e.conditions)
        body_id = e.resource.get("id")
        if found and body_id not in (None, found):
            raise _invalid(
                f"El id del recurso ('{body_id}') no coincide con el recurso encontrado ('{found}')", f"{e.res_type}.id"
            )
        return found or e.new_id, found is not None or body_id is not None

    def _prepared(self, e: _Entry, res_id: str) -> _Prepared:
        """The entry's references resolved now, and its extraction: the one made before the job
        when it was made for the same id and references, else a new one."""
        values = tuple(self._resolve(s) for s in e.slots)
        for slot, value in zip(e.slots, values, strict=True):
            slot.holder["reference"] = value
        if e.prepared is not None and e.prepared_as == (res_id, values):
            return e.prepared
        return _prepare(e.resource, res_id)

    def _resolve(self, slot: _Slot) -> str:
        if slot.conditional:
            return self._conditional(slot.key)
        link = self.links[slot.key]
        if link.certain:
            return link.target
        if slot.key in self.settled:
            return self.settled[slot.key]
        self.guessed[slot.key] = link.target
        return link.target

    def _search_value(self, value: str) -> str:
        """A search value naming a fullUrl of the Bundle ('subject=urn:uuid:...') names what it became."""
        link = self.links.get(value)
        return value if link is None else self.settled.get(value, link.target)

    def _conditional(self, key: str) -> str:
        found = self.resolved.get(key)
        if found is None:
            res_type, params = self.conditions[key]
            ids = self.store.find(res_type, params, self.conn)
            if not ids:
                raise _invalid(
                    f"La referencia condicional '{key[:160]}' no coincide con ningún recurso; debe identificar exactamente uno",
                    code="not-found",
                )
            if len(ids) > 1:
                raise FhirError.of(
                    412,
                    f"La referencia condicional '{key[:160]}' coincide con varios recursos; debe identificar exactamente uno",
                    "multiple-matches",
                )
            found = self.resolved[key] = f"{res_type}/{ids[0]}"
        return found

    def _prefetch(self, group: list[_Entry]) -> None:
        """Resolve the group's conditional references together (one flush of the pending
        inserts); one that does not match exactly one resource is tried again when used."""
        for key in dict.fromkeys(s.key for e in group for s in e.slots if s.conditional and s.key not in self.resolved):
            res_type, params = self.conditions[key]
            try:
                ids = self.store.find(res_type, params, self.conn)
            except FhirError:
                continue  # raised again, for the entry that uses it, by _conditional
            if len(ids) == 1:
                self.resolved[key] = f"{res_type}/{ids[0]}"

    def _settle(self, e: _Entry, stored: Stored) -> None:
        """Record what the entry's fullUrl turned out to be."""
        if e.full_url is None or e.full_url not in self.links:
            return
        actual = f"{stored.res_type}/{stored.res_id}"
        guessed = self.guessed.get(e.full_url)
        if guessed is not None and guessed != actual:
            raise FhirError.of(
                409,
                f"Otra entrada usó la referencia a '{e.full_url[:120]}' antes de que esta escritura condicional se "
                f"resolviera (resultó {actual}); ponga esta entrada antes de las que la referencian",
                "conflict",
            )
        self.settled[e.full_url] = actual

    def _claim(self, e: _Entry, res_type: str, res_id: str) -> None:
        first = self.written.setdefault((res_type, res_id), e.index)
        if first != e.index:
            raise _invalid(
                f"Bundle.entry[{first}] ya modifica {res_type}/{res_id}; una transacción no puede modificar un recurso dos veces",
                code="business-rule",
            )


_PROCESS = {"DELETE": _Run.delete, "POST": _Run.post, "PUT": _Run.put, "GET": _Run.read, "HEAD": _Run.read}


def _execute(
    store: ResourceStore, caller: Caller, entries: list[_Entry], links: dict[str, _Link], conditions: dict
) -> dict[int, object]:
    """Run the entries in one job (one transaction); raise the failing entry's error, after
    recording a denial's audit entries on their own."""
    view = store.with_gate(_DenyingGate(store.gate))
    groups = _groups(entries, links)

    def job(conn: sa.Connection):
        return _Run(view, caller, conn, links, conditions).run(groups), None

    try:
        return view._commit(job, caller)
    except _EntryFailed as failed:
        raise at_entry(failed.index, failed.error) from None
    except _Denied as denied:
        recorded = store._record_denied(caller, denied.accesses)
        raise at_entry(denied.index, recorded or denied.error) from None


# --------------------------------------------------------------------- transaction and batch


def _transaction(store: ResourceStore, caller: Caller, raw_entries: list, options: BundleOptions) -> list[dict]:
    entries: list[_Entry] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_entries):
        try:
            entry = _parse_entry(index, raw, options)
            _check_unique_full_url(entry, seen)
        except FhirError as exc:
            raise at_entry(index, exc) from None
        entries.append(entry)
    links = _links(entries)
    conditions: dict[str, tuple[str, list]] = {}
    for entry in entries:
        try:
            _collect_slots(entry, links, conditions)
        except FhirError as exc:
            raise at_entry(entry.index, exc) from None
    _plan(store, entries, links, conditions)
    results = _execute(store, caller, entries, links, conditions)
    return [_entry_response(e, results[e.index], options) for e in entries]


def _batch(store: ResourceStore, caller: Caller, raw_entries: list, options: BundleOptions) -> list[dict]:
    elsewhere = frozenset(
        raw["fullUrl"] for raw in raw_entries if isinstance(raw, dict) and isinstance(raw.get("fullUrl"), str)
    )
    seen: dict[str, int] = {}
    out = []
    for index, raw in enumerate(raw_entries):
        try:
            out.append(_batch_entry(store, caller, index, raw, options, seen, elsewhere))
        except FhirError as exc:
            out.append(_error_response(at_entry(index, exc)))
    return out


def _batch_entry(
    store: ResourceStore,
    caller: Caller,
    index: int,
    raw,
    options: BundleOptions,
    seen: dict[str, int],
    elsewhere: frozenset[str],
) -> dict:
    """One batch entry, as a transaction of its own: only its own fullUrl resolves."""
    entry = _parse_entry(index, raw, options)
    _check_unique_full_url(entry, seen)
    links = _links([entry])
    conditions: dict[str, tuple[str, list]] = {}
    _collect_slots(entry, links, conditions, elsewhere - links.keys())
    _plan(store, [entry], links, conditions)
    results = _execute(store, caller, [entry], links, conditions)
    return _entry_response(entry, results[index], options)


# ------------------------------------------------------------------------------ responses


def _response(kind: str, entries: list[dict]) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def _status(code: int) -> str:
    return f"{code} {HTTPStatus(code).phrase}"


def _entry_response(entry: _Entry, result, options: BundleOptions) -> dict:
    if entry.method in ("POST", "PUT"):
        return _write_response(result, options)
    if entry.method == "DELETE":
        return _delete_response(result)
    if entry.params is not None:
        return _search_response(entry, result, options)
    return _read_response(result, options, with_body=entry.method == "GET")


def _write_response(result: WriteResult, options: BundleOptions) -> dict:
    s = result.stored
    response = {
        "status": _status(201 if result.created else 200),
        "location": s.location,
        "etag": s.etag,
        "lastModified": instant(s.last_updated),
    }
    out: dict = {"fullUrl": f"{options.base}/{s.res_type}/{s.res_id}"}
    prefer = options.prefer
    if "return=OperationOutcome" in prefer:
        verb = "creado" if result.created else ("actualizado" if result.changed else "sin cambios")
        response["outcome"] = operation_outcome([Issue(f"{s.res_type}/{s.res_id} {verb}", "informational", "information")])
    elif "return=minimal" not in prefer:
        out["resource"] = orjson.Fragment(s.body)
    out["response"] = response
    return out


def _delete_response(stored: Stored | None) -> dict:
    response: dict = {"status": _status(204)}
    if stored is not None:
        response["etag"] = stored.etag
    return {"response": response}


def _read_response(stored: Stored, options: BundleOptions, *, with_body: bool) -> dict:
    out: dict = {"fullUrl": f"{options.base}/{stored.res_type}/{stored.res_id}"}
    if with_body:
        out["resource"] = orjson.Fragment(stored.body)
    out["response"] = {"status": _status(200), "etag": stored.etag, "lastModified": instant(stored.last_updated)}
    return out


def _search_response(entry: _Entry, rows: list[Stored], options: BundleOptions) -> dict:
    base = options.base
    url = f"{base}/{entry.res_type}" + (f"?{entry.query}" if entry.query else "")
    searchset = {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [{"relation": "self", "url": url}],
        "entry": [
            {"fullUrl": f"{base}/{s.res_type}/{s.res_id}", "resource": orjson.Fragment(s.body), "search": {"mode": "match"}}
            for s in rows
        ],
    }
    out: dict = {}
    if entry.method == "GET":
        out["resource"] = searchset
    out["response"] = {"status": _status(200)}
    return out


def _error_response(exc: FhirError) -> dict:
    return {"response": {"status": _status(exc.status), "outcome": exc.outcome()}}
