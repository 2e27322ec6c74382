"""QIDO-RS (PS3.18 10.6): search studies, series and instances, answered in DICOM JSON.

Query parameters: attribute matching by keyword or tag (``PatientName=garc*``,
``00100020=MRN-1``; UID lists with commas or backslashes; a dotted path names an attribute of
a sequence's item, ``OtherPatientIDsSequence.PatientID=HECM791203MDFRRR05``, and the dotted
keys of one sequence make one item to match), ``includefield`` (keywords, tags or ``all``;
repeated or comma-separated), ``limit``/``offset``, ``fuzzymatching=true``. Matching itself is
``expediente.dicom.query`` (shared with C-FIND). No match answers 204 No Content, as PS3.18
8.3.4.4.1 requires today (CP-2473 proposes 200 with an empty body; dicomweb-client reads
both). A result cut at the server's maximum, or a key the index cannot match, is said in a
``Warning: 299`` header. Bad parameters answer 400 with an OperationOutcome in Spanish.
"""

from __future__ import annotations

import functools
import re

import orjson
import sqlalchemy as sa
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from expediente.db.schema import dicom_study
from expediente.dicom import query
from expediente.dicom.web.access import imaging_grant, record_access
from expediente.fhir.errors import FhirError

MEDIA = "application/dicom+json"
MAX_LIMIT = 1000
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_CONTROL = {"limit", "offset", "fuzzymatching", "includefield"}
_NUMBERS = {"IS", "US", "SS", "UL", "SL", "DS", "FL", "FD"}
# What the levels above add to an answer when the request does not name them (PS3.18 10.6.3.3).
_ABOVE = {
    "series": query.STUDY_DEFAULTS,
    "study-instances": query.SERIES_DEFAULTS,
    "instances": (*query.STUDY_DEFAULTS, *query.SERIES_DEFAULTS),
}


def _bad(text: str) -> FhirError:
    return FhirError.of(400, text, "invalid")


def _keyword(name: str) -> str:
    """A query parameter's attribute as a keyword (tags accepted); 400 when DICOM has none."""
    if _TAG.match(name):
        keyword = keyword_for_tag(int(name, 16))
        if keyword:
            return keyword
    elif tag_for_keyword(name) is not None:
        return name
    raise _bad(f"Atributo DICOM desconocido en la consulta: {name[:64]!r}")


def _vr(keyword: str) -> str:
    try:
        return dictionary_VR(keyword).split(" or ")[0]
    except KeyError:
        return "UN"


def parse(request: Request, level: str, fixed: dict[str, str], scope: str) -> tuple[dict | None, int, int, bool, list[str]]:
    """keys (None: nothing can match), limit, offset, fuzzy and the warnings of one request."""
    params = request.query_params
    keys: dict = {}
    include: list[str] = []
    for name, value in params.multi_items():
        if name == "includefield":
            include += [v.strip() for v in value.split(",") if v.strip()]
        elif name in _CONTROL:
            continue
        elif "." in name:  # sequence matching: SequenceKeyword.ItemKeyword, one item per sequence
            head, _, rest = name.partition(".")
            if "." in rest:
                raise _bad(f"Solo se compara un nivel de secuencia: {name[:64]!r}")
            sequence = keys.get(_keyword(head))
            if not isinstance(sequence, list) or not sequence:
                sequence = keys[_keyword(head)] = [{}]
            sequence[0][_keyword(rest)] = value
        else:
            keyword = _keyword(name)
            if _vr(keyword) == "UI":
                value = value.replace(",", "\\")
            if keyword in keys and isinstance(keys[keyword], str) and keys[keyword]:
                value = keys[keyword] + "\\" + value  # a repeated attribute: any of the values
            keys[keyword] = value
    contradicts = False
    for keyword, value in fixed.items():
        if keys.get(keyword) not in (None, "", value):
            contradicts = True  # the path and the query disagree: nothing matches
        keys[keyword] = value
    for field in include:
        if field == "all":
            for keyword, attr in query.ATTRS.items():
                if attr.level <= query.LEVELS[level] and (level == "PATIENT" or not keyword.startswith("NumberOfPatient")):
                    keys.setdefault(keyword, "")
        else:
            keys.setdefault(_keyword(field), "")
    for keyword in _ABOVE.get(scope, ()):
        keys.setdefault(keyword, "")
    limit = _integer(params, "limit", MAX_LIMIT)
    offset = _integer(params, "offset", 0)
    fuzzy = params.get("fuzzymatching", "false").lower()
    if fuzzy not in ("true", "false"):
        raise _bad("fuzzymatching debe ser true o false")
    warnings = []
    if limit > MAX_LIMIT:
        warnings.append(f'299 expediente "El maximo de resultados por consulta es {MAX_LIMIT}; pida mas con offset"')
        limit = MAX_LIMIT
    return None if contradicts else keys, limit, offset, fuzzy == "true", warnings


def _integer(params, name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise _bad(f"{name} debe ser un entero no negativo, no {raw[:16]!r}")
    return int(raw)


@functools.lru_cache(maxsize=4096)
def _element(keyword: str) -> tuple[str, str] | None:
    """(tag as 8 hex digits, VR) of a keyword: looked up once, not per answer."""
    tag = tag_for_keyword(keyword)
    return None if tag is None else (f"{tag:08X}", _vr(keyword))


def to_json(row: dict, base: str, level: str) -> dict:
    """One answer in DICOM JSON (PS3.18 F.2), attributes in tag order."""
    out = _attributes(row)
    url = f"{base}/studies/{row['StudyInstanceUID']}"
    if level in ("SERIES", "IMAGE"):
        url += f"/series/{row['SeriesInstanceUID']}"
    if level == "IMAGE":
        url += f"/instances/{row['SOPInstanceUID']}"
    out["00080005"] = {"vr": "CS", "Value": ["ISO_IR 192"]}
    out["00080056"] = {"vr": "CS", "Value": ["ONLINE"]}
    out["00081190"] = {"vr": "UR", "Value": [url]}
    return dict(sorted(out.items()))


def _attributes(values: dict) -> dict[str, dict]:
    """Keyword -> value (a sequence: a list of such dicts) as DICOM JSON elements, in tag order."""
    out: dict[str, dict] = {}
    for keyword, value in values.items():
        known = _element(keyword)
        if known is None:
            continue
        tag, vr = known
        element: dict = {"vr": vr}
        if vr == "SQ":
            if value:  # an empty sequence has no Value (PS3.18 F.2.5)
                element["Value"] = [_attributes(item) for item in value]
        elif value not in (None, ""):
            if vr == "PN":
                element["Value"] = [{"Alphabetic": value}]
            elif vr in _NUMBERS:
                numbers = [value] if isinstance(value, int | float) else [_number(v) for v in str(value).split("\\")]
                if None not in numbers:
                    element["Value"] = numbers
            else:
                element["Value"] = str(value).split("\\")
        out[tag] = element
    return dict(sorted(out.items()))


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None  # an extra tag kept as text that is not a number: sent without a value


def search(level: str, scope_name: str, fixed=lambda p: {}):
    async def endpoint(request: Request) -> Response:
        path = {k: v for k, v in fixed(request.path_params).items()}
        keys, limit, offset, fuzzy, warnings = parse(request, level, path, scope_name)
        services = request.app.state.services

        def run():
            grant, scope = imaging_grant(request, "search")
            if keys is None:
                rows = []
            else:
                try:
                    planned = query.plan(services.reader.dialect.name, level, keys, scope=scope, limit=limit + 1, offset=offset, fuzzy=fuzzy)
                except query.QueryError as exc:
                    raise _bad(str(exc)) from None
                with services.reader.connect() as conn:
                    rows = planned.rows(conn)
                    if len(rows) > limit:
                        rows = rows[:limit]
                        warnings.append('299 expediente "Hay mas resultados de los devueltos; pida los siguientes con offset"')
                    if planned.ignored:
                        names = ", ".join(planned.ignored)
                        warnings.append(f'299 expediente "El archivo no compara por {names[:200]}; se ignoraron en la busqueda"')
                    studies = _patient_keys(conn, rows)
            if not rows:
                studies = []
            record_access(request, grant, "search", studies)
            return rows

        rows = await run_in_threadpool(run)
        # HTTP header values are ASCII: the warnings' Spanish is written without accents.
        headers = {"Warning": ", ".join(warnings)} if warnings else {}
        if not rows:
            return Response(status_code=204, headers=headers)
        base = services.settings.public_base + "/dicomweb"
        body = orjson.dumps([to_json(r, base, level) for r in rows])
        return Response(body, media_type=MEDIA, headers=headers)

    return endpoint


def _patient_keys(conn: sa.Connection, rows: list[dict]) -> list[tuple[str, str | None]]:
    """(study UID, patient key) of the studies in an answer, for the audit trail."""
    uids = list(dict.fromkeys(r["StudyInstanceUID"] for r in rows))
    found: dict[str, str | None] = {}
    for start in range(0, len(uids), 500):
        chunk = uids[start : start + 500]
        found.update(conn.execute(sa.select(dicom_study.c.study_uid, dicom_study.c.patient_key).where(dicom_study.c.study_uid.in_(chunk))).all())
    return [(uid, found.get(uid)) for uid in uids]


routes = [
    Route("/dicomweb/studies", search("STUDY", "studies"), methods=["GET"]),
    Route("/dicomweb/series", search("SERIES", "series"), methods=["GET"]),
    Route("/dicomweb/instances", search("IMAGE", "instances"), methods=["GET"]),
    Route("/dicomweb/studies/{study}/series", search("SERIES", "study-series", lambda p: {"StudyInstanceUID": p["study"]}), methods=["GET"]),
    Route(
        "/dicomweb/studies/{study}/instances",
        search("IMAGE", "study-instances", lambda p: {"StudyInstanceUID": p["study"]}),
        methods=["GET"],
    ),
    Route(
        "/dicomweb/studies/{study}/series/{series}/instances",
        search("IMAGE", "series-instances", lambda p: {"StudyInstanceUID": p["study"], "SeriesInstanceUID": p["series"]}),
        methods=["GET"],
    ),
]
