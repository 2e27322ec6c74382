"""The imaging query engine behind DIMSE C-FIND and QIDO-RS: matching keys on the index tables.

``find(conn, level, keys, scope=...)`` answers from dicom_study / dicom_series /
dicom_instance only (never from files). ``keys`` is a C-FIND identifier as a dict keyword ->
match value (a string; a list of dicts for a sequence):

- ``""``: return key (universal match);
- single value: exact match (case-sensitive); ``*`` and ``?`` make it a wildcard match;
- a backslash-separated list: any of the values (UID list matching; also allowed for other
  attributes, e.g. ``ModalitiesInStudy=CT\\MR``);
- DA/TM/DT: ``A-B``, ``-B``, ``A-`` range matching (inclusive; ``1000-1200`` includes 12:00:59);
- PN: matched on ``patient_name_norm`` (accents and case ignored, as most archives do by
  default). With ``fuzzy`` each word of the value is a prefix of some component word of the
  name, in any order: ``garc mar`` finds "García López^María José";
- sequences (PS3.4 C.2.2.2.6): the key is one item whose attributes are matched, by the rules
  above (text), against the items of the sequences the index keeps (``dicom.sequences``:
  OtherPatientIDsSequence, IssuerOfAccessionNumberSequence, ProcedureCodeSequence,
  RequestAttributesSequence); a study (or series) matches when one of its items matches every
  item key, and the answer carries the matching items with the requested item attributes (an
  item with no key: every item, every kept attribute). Other sequences, and item attributes
  the index does not keep, are returned empty and do not restrict the match (the standard
  leaves unsupported optional keys to the SCP);
- a known keyword the index does not hold is returned empty and ignored for matching (see
  ``Query.ignored``); at IMAGE level the instance's extra tags (setting dicom_extra_tags) are
  matched and returned, and other attributes are returned from the instance's stored DICOM JSON
  (dicom_instance.metadata) when it has been built. An unknown keyword or a malformed value raises ``QueryError``.

Each answer is a dict keyword -> value holding the requested keys, the unique keys of the
level and the levels above, and the attributes QIDO-RS must return at that level
(PS3.18 tables 10.6.3-3/4/5). Values: ``str`` for text VRs ("" when empty; multi-valued text
backslash-joined, e.g. ModalitiesInStudy ``"CT\\PT"``), ``int | None`` for IS/US, ``[]`` for
sequences. Order is stable: studies newest first, then UID; series by number; instances by
number.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import sqlalchemy as sa
from pydicom.datadict import dictionary_VR, tag_for_keyword

from expediente.db.schema import dicom_instance, dicom_item, dicom_series, dicom_study, dicom_study_name
from expediente.dicom.names import normalized_name
from expediente.dicom.sequences import INDEXED, IndexedSequence
from expediente.dicom.sequences import is_sequence as _is_sequence

LEVELS = {"PATIENT": 0, "STUDY": 1, "SERIES": 2, "IMAGE": 3}
PATIENT, STUDY, SERIES, IMAGE = range(4)

# Keys of a C-FIND identifier that are not attributes to match.
_CONTROL = {"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle", "InstanceAvailability", "TimezoneOffsetFromUTC"}


class QueryError(ValueError):
    """A query the engine cannot answer as asked; the message is in Spanish for the caller."""


@dataclass(frozen=True, slots=True)
class Attr:
    keyword: str
    level: int
    column: sa.ColumnElement | None  # None: computed at the patient level
    kind: str  # text | pn | uid | date | time | int | count | modalities


def _a(keyword: str, level: int, column, kind: str = "text") -> tuple[str, Attr]:
    return keyword, Attr(keyword, level, column, kind)


S, R, I, N, T = dicom_study.c, dicom_series.c, dicom_instance.c, dicom_study_name.c, dicom_item.c
ATTRS: dict[str, Attr] = dict(
    [
        _a("PatientID", PATIENT, S.patient_id),
        _a("IssuerOfPatientID", PATIENT, S.issuer),
        _a("PatientName", PATIENT, S.patient_name, "pn"),
        _a("PatientBirthDate", PATIENT, S.patient_birth_date, "date"),
        _a("PatientSex", PATIENT, S.patient_sex),
        _a("NumberOfPatientRelatedStudies", PATIENT, None, "count"),
        _a("NumberOfPatientRelatedSeries", PATIENT, None, "count"),
        _a("NumberOfPatientRelatedInstances", PATIENT, None, "count"),
        _a("StudyInstanceUID", STUDY, S.study_uid, "uid"),
        _a("StudyDate", STUDY, S.study_date, "date"),
        _a("StudyTime", STUDY, S.study_time, "time"),
        _a("AccessionNumber", STUDY, S.accession_number),
        _a("StudyID", STUDY, S.study_id),
        _a("StudyDescription", STUDY, S.study_description),
        _a("ReferringPhysicianName", STUDY, S.referring_physician),
        _a("ModalitiesInStudy", STUDY, S.modalities, "modalities"),
        _a("NumberOfStudyRelatedSeries", STUDY, S.series_count, "count"),
        _a("NumberOfStudyRelatedInstances", STUDY, S.instance_count, "count"),
        _a("SeriesInstanceUID", SERIES, R.series_uid, "uid"),
        _a("Modality", SERIES, R.modality),
        _a("SeriesNumber", SERIES, R.series_number, "int"),
        _a("SeriesDescription", SERIES, R.series_description),
        _a("BodyPartExamined", SERIES, R.body_part),
        _a("SeriesDate", SERIES, R.series_date, "date"),
        _a("NumberOfSeriesRelatedInstances", SERIES, R.instance_count, "count"),
        _a("SOPInstanceUID", IMAGE, I.sop_instance_uid, "uid"),
        _a("SOPClassUID", IMAGE, I.sop_class_uid, "uid"),
        _a("InstanceNumber", IMAGE, I.instance_number, "int"),
        _a("Rows", IMAGE, I.rows, "int"),
        _a("Columns", IMAGE, I.columns, "int"),
        _a("NumberOfFrames", IMAGE, I.frames, "int"),
        _a("AvailableTransferSyntaxUID", IMAGE, I.transfer_syntax, "uid"),
    ]
)

UNIQUE = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
# What QIDO-RS returns at each level without includefield (PS3.18 10.6.3.3), as far as the
# index holds it; the protocol layers add RetrieveURL, SpecificCharacterSet and the like.
DEFAULTS = {
    PATIENT: ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances"),
    STUDY: (
        "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName", "PatientName", "PatientID",
        "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
    ),
    SERIES: ("Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber", "NumberOfSeriesRelatedInstances", "StudyInstanceUID"),
    IMAGE: ("SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames", "StudyInstanceUID", "SeriesInstanceUID"),
}
STUDY_DEFAULTS, SERIES_DEFAULTS = DEFAULTS[STUDY], DEFAULTS[SERIES]

_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_DATETIME = re.compile(r"^\d{4,14}(\.\d{1,6})?([+-]\d{4})?$")


@dataclass
class SequenceKey:
    """A key on an indexed sequence: what its items return, and which items match it."""

    sequence: IndexedSequence
    returned: tuple[str, ...]  # the item attributes an answer's items carry
    matching: sa.Select | None  # (owner_uid, item) of the items that match; None: every item


@dataclass
class Query:
    """A planned query: the statement, how to read its rows, what was not matched."""

    level: int
    statement: sa.Select
    reads: list[tuple[str, str, int]]  # (keyword, kind, column index | -1 extra or metadata | -2 empty | -3 sequence items)
    extra_index: int | None  # then the extra tags' JSON, and the instance's DICOM JSON after it
    ignored: list[str] = field(default_factory=list)
    sequences: dict[str, SequenceKey] = field(default_factory=dict)
    scope: sa.ColumnElement[bool] | None = None  # on dicom_study: whose studies' items a patient shows

    def rows(self, conn: sa.Connection) -> list[dict]:
        out = self._rows(conn)
        for keyword, key in self.sequences.items():
            _fill_items(conn, out, keyword, key, self.level, self.scope)
        return out

    def _rows(self, conn: sa.Connection) -> list[dict]:
        out = []
        for row in conn.execute(self.statement):
            extra = orjson.loads(row[self.extra_index]) if self.extra_index is not None and row[self.extra_index] else {}
            doc = None
            item: dict = {}
            for keyword, kind, index in self.reads:
                if index >= 0:
                    value = row[index]
                    item[keyword] = ("" if value is None else value) if kind not in ("int", "count") else (None if value is None else int(value))
                elif index == -1:
                    if keyword in extra:
                        item[keyword] = str(extra[keyword])
                    else:  # the instance's metadata, once the follower built it
                        if doc is None:
                            raw = row[self.extra_index + 1]
                            doc = orjson.loads(raw) if raw else {}
                        item[keyword] = _from_json(doc, keyword)
                else:
                    item[keyword] = [] if _is_sequence(keyword) else ""
            out.append(item)
        return out


def _fill_items(conn: sa.Connection, rows: list[dict], keyword: str, key: SequenceKey, level: int, scope) -> None:
    """Each answer's matching items of ``keyword``, read from dicom_item in one pass."""
    if not rows:
        return
    seq = key.sequence
    if level == PATIENT:  # the items of the patient's studies (those the caller may see)
        studies: dict[tuple[str, str], list[str]] = {}
        pids = list({r["PatientID"] for r in rows})
        statement = sa.select(S.study_uid, S.patient_id, S.issuer).where(S.patient_id.in_(pids))
        if scope is not None:
            statement = statement.where(scope)
        for uid, pid, issuer in conn.execute(statement):
            studies.setdefault((pid, issuer), []).append(uid)
        owners_of = [studies.get((r["PatientID"], r["IssuerOfPatientID"]), []) for r in rows]
    else:
        unique = "SeriesInstanceUID" if seq.owner == "series" else "StudyInstanceUID"
        owners_of = [[r[unique]] for r in rows]
    owners = sorted({o for group in owners_of for o in group})
    found: dict[str, dict[int, dict[str, str]]] = {}
    matched: set[tuple[str, int]] | None = None if key.matching is None else set()
    for start in range(0, len(owners), 500):
        chunk = owners[start : start + 500]
        found_rows = conn.execute(
            sa.select(T.owner_uid, T.item, T.keyword, T.value).where(T.sequence == seq.keyword, T.owner_uid.in_(chunk))
        )
        for owner, number, attr, value in found_rows:
            found.setdefault(owner, {}).setdefault(number, {})[attr] = value
        if matched is not None:
            m = key.matching.subquery()
            matched.update(tuple(r) for r in conn.execute(sa.select(m.c.owner_uid, m.c.item).where(m.c.owner_uid.in_(chunk))))
    for row, group in zip(rows, owners_of):
        items: list[dict[str, str]] = []
        for owner in group:
            for number, values in sorted(found.get(owner, {}).items()):
                if matched is not None and (owner, number) not in matched:
                    continue
                shown = {a: values.get(a, "") for a in key.returned}
                if shown not in items:  # one patient's studies repeat the same identifiers
                    items.append(shown)
        row[keyword] = items


def find(conn: sa.Connection, level: str, keys: dict, *, scope, limit: int | None = None, offset: int = 0, fuzzy: bool = False) -> list[dict]:
    """The matches of ``keys`` at ``level`` (see the module docstring), visible to ``scope``."""
    return plan(conn.dialect.name, level, keys, scope=scope, limit=limit, offset=offset, fuzzy=fuzzy).rows(conn)


def plan(dialect: str, level: str, keys: dict, *, scope, limit: int | None = None, offset: int = 0, fuzzy: bool = False) -> Query:
    if level not in LEVELS:
        raise QueryError(f"Nivel de consulta desconocido: {str(level)[:16]!r} (PATIENT, STUDY, SERIES o IMAGE)")
    lv = LEVELS[level]
    if limit is not None and limit < 0 or offset < 0:
        raise QueryError("limit y offset deben ser enteros no negativos")
    match = _Matcher(dialect, fuzzy)
    conditions: list[sa.ColumnElement[bool]] = []
    if (cond := scope.where(dicom_study)) is not None:
        conditions.append(cond)
    wanted: list[str] = []
    ignored: list[str] = []
    extra_keys: list[str] = []
    sequence_keys: dict[str, SequenceKey] = {}
    for keyword, value in keys.items():
        if keyword in _CONTROL:
            continue
        value = _as_key(keyword, value)
        seq = INDEXED.get(keyword)
        if seq is not None and LEVELS[seq.level] <= lv and (lv != PATIENT or seq.level == "PATIENT"):
            key = _sequence_key(seq, value, match, ignored)
            sequence_keys[keyword] = key
            wanted.append(keyword)
            if key.matching is not None:
                owner = S.study_uid if seq.owner == "study" else R.series_uid
                conditions.append(owner.in_(sa.select(key.matching.subquery().c.owner_uid)))
            continue
        attr = ATTRS.get(keyword)
        if attr is None:
            if tag_for_keyword(keyword) is None:
                raise QueryError(f"Atributo DICOM desconocido: {str(keyword)[:64]!r}")
            if lv == IMAGE and not _is_sequence(keyword):
                extra_keys.append(keyword)
                if isinstance(value, str) and value:
                    conditions.append(match.text(_extra_value(dialect, keyword), value))
            else:
                if _has_value(value):
                    ignored.append(keyword)
                wanted.append(keyword)
            continue
        if attr.level > lv or (lv == PATIENT and attr.level != PATIENT) or (lv != PATIENT and attr.keyword.startswith("NumberOfPatient")):
            if _has_value(value):
                ignored.append(keyword)
            wanted.append(keyword)
            continue
        wanted.append(keyword)
        if not isinstance(value, str):
            raise QueryError(f"El valor de {keyword} debe ser texto, no una secuencia")
        if value and (cond := match.attr(attr, value)) is not None:
            conditions.append(cond)
        elif value and attr.kind == "count":
            ignored.append(keyword)
    # The level's unique keys and QIDO's defaults come back whether asked or not.
    for keyword in (*UNIQUE[: lv + 1], *DEFAULTS[lv]):
        if keyword not in wanted:
            wanted.append(keyword)
    if lv == IMAGE:
        extra_keys += [k for k in wanted if k not in ATTRS and k not in extra_keys and not _is_sequence(k)]
    wanted = [k for k in wanted if k not in extra_keys]
    query = _statement(lv, wanted, extra_keys, conditions, ignored, limit, offset, sequence_keys)
    query.scope = scope.where(dicom_study)
    return query


def _sequence_key(seq: IndexedSequence, value, match: _Matcher, ignored: list[str]) -> SequenceKey:
    """The key on an indexed sequence: its single item's attributes matched (PS3.4 C.2.2.2.6)."""
    if isinstance(value, str):
        if value:
            raise QueryError(f"{seq.keyword} es una secuencia: su valor debe ser un ítem con atributos, no texto")
        return SequenceKey(seq, seq.items, None)
    if len(value) > 1:
        raise QueryError(f"{seq.keyword}: una clave de secuencia lleva un solo ítem, no {len(value)}")
    item = _item_keys(value[0]) if value else {}
    if not item:
        return SequenceKey(seq, seq.items, None)
    keys: list[tuple[str, str]] = []
    for attr, text in item.items():
        if tag_for_keyword(attr) is None:
            raise QueryError(f"Atributo DICOM desconocido en {seq.keyword}: {str(attr)[:64]!r}")
        if attr not in seq.items:
            if text:
                ignored.append(f"{seq.keyword}.{attr}")
        elif text:
            keys.append((attr, text))
    conditions = [(attr, cond) for attr, text in keys if (cond := _any_text(match, T.value, text)) is not None]
    return SequenceKey(seq, tuple(item), _items_matching(seq.keyword, conditions) if conditions else None)


def _any_text(match: _Matcher, column: sa.ColumnElement, value: str) -> sa.ColumnElement[bool] | None:
    return match.any_of(value, lambda v: match.text(column, v))


def _items_matching(sequence: str, conditions: list[tuple[str, sa.ColumnElement[bool]]]) -> sa.Select:
    """(owner_uid, item) of the items of ``sequence`` whose attributes meet every condition
    (each written on dicom_item.value): the first on the outer row, the others on the same item."""
    first, *rest = conditions
    outer = dicom_item.alias("item_0")
    statement = sa.select(outer.c.owner_uid, outer.c.item).where(
        outer.c.sequence == sequence, outer.c.keyword == first[0], _on(first[1], outer)
    )
    for n, (attr, condition) in enumerate(rest, start=1):
        inner = dicom_item.alias(f"item_{n}")
        statement = statement.where(
            sa.exists().where(inner.c.owner_uid == outer.c.owner_uid, inner.c.sequence == sequence, inner.c.item == outer.c.item,
                              inner.c.keyword == attr, _on(condition, inner))
        )
    return statement


def _on(condition: sa.ColumnElement[bool], alias) -> sa.ColumnElement[bool]:
    """A condition written on dicom_item.value, moved onto ``alias``."""
    from sqlalchemy.sql.util import ClauseAdapter

    return ClauseAdapter(alias).traverse(condition)


def _item_keys(item) -> dict[str, str]:
    """A key item as C-FIND or QIDO hands it (a dict, or a pydicom Dataset): keyword -> text.
    Nested sequences in it are not matched."""
    if isinstance(item, dict):
        pairs = item.items()
    elif hasattr(item, "iterall"):  # a pydicom Dataset
        pairs = [(e.keyword, e.value) for e in item if e.keyword]
    else:
        raise QueryError("un ítem de secuencia debe tener atributos")
    return {k: v for k, v in ((k, _as_key(k, v)) for k, v in pairs) if isinstance(v, str)}


def _as_key(keyword: str, value):
    """A key as C-FIND callers hand it: a str, or what pydicom holds (PersonName, MultiValue,
    numbers, None), or for a sequence a list of dicts/Datasets. Text comes out as one string,
    multiple values backslash-joined; sequences stay lists."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        items = list(value)
        if _is_sequence(keyword) or any(not isinstance(v, str | int | float) and hasattr(v, "keys") for v in items):
            return items
        return "\\".join(str(v) for v in items)
    return str(value)


def _from_json(doc: dict, keyword: str):
    """A value of the instance's DICOM JSON in this module's shapes (text backslash-joined,
    one number as a number); "" when absent or a sequence or bulk data."""
    element = doc.get(f"{tag_for_keyword(keyword):08X}") or {}
    values = element.get("Value")
    if not values or element.get("vr") == "SQ":
        return ""
    if element.get("vr") == "PN":
        return "\\".join(v.get("Alphabetic", "") if isinstance(v, dict) else str(v) for v in values)
    if len(values) == 1 and isinstance(values[0], int | float):
        return values[0]
    return "\\".join(str(v) for v in values)


def _has_value(value) -> bool:
    if isinstance(value, str):
        return bool(value)
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                if any(_has_value(v) for v in item.values()):
                    return True
            elif hasattr(item, "values") and any(str(e.value) for e in item.values()):  # a pydicom Dataset
                return True
        return False
    return value is not None


def _extra_value(dialect: str, keyword: str) -> sa.ColumnElement:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import JSONB

        return sa.cast(dicom_instance.c.extra, JSONB)[keyword].astext
    return sa.func.json_extract(dicom_instance.c.extra, f"$.{keyword}")


def _statement(lv, wanted, extra_keys, conditions, ignored, limit, offset, sequence_keys) -> Query:
    columns: list[sa.ColumnElement] = []
    reads: list[tuple[str, str, int]] = []
    for keyword in wanted:
        if keyword in sequence_keys:
            reads.append((keyword, "sequence", -3))
            continue
        attr = ATTRS.get(keyword)
        usable = attr is not None and attr.level <= lv and not (lv == PATIENT and attr.level != PATIENT) and not (lv != PATIENT and keyword.startswith("NumberOfPatient"))
        if not usable:
            reads.append((keyword, "text", -2))
            continue
        if lv == PATIENT:
            column = {
                "NumberOfPatientRelatedStudies": sa.func.count(),
                "NumberOfPatientRelatedSeries": sa.func.sum(S.series_count),
                "NumberOfPatientRelatedInstances": sa.func.sum(S.instance_count),
                "PatientID": S.patient_id,
                "IssuerOfPatientID": S.issuer,
            }.get(keyword, sa.func.max(attr.column) if attr.column is not None else None)
        else:
            column = attr.column
        reads.append((keyword, attr.kind, len(columns)))
        columns.append(column)
    extra_index = None
    for keyword in extra_keys:
        reads.append((keyword, "text", -1))
    if extra_keys:
        extra_index = len(columns)
        columns += [I.extra, I.metadata]

    if lv <= STUDY:
        source = dicom_study
    elif lv == SERIES:
        source = dicom_series.join(dicom_study, S.study_uid == R.study_uid)
    else:
        source = dicom_instance.join(dicom_series, R.series_uid == I.series_uid).join(dicom_study, S.study_uid == I.study_uid)
    statement = sa.select(*columns).select_from(source)
    if conditions:
        statement = statement.where(*conditions)
    if lv == PATIENT:
        statement = statement.group_by(S.patient_id, S.issuer).order_by(S.patient_id, S.issuer)
    else:
        order = [S.study_date.desc(), S.study_time.desc(), S.study_uid]
        if lv >= SERIES:
            order += [R.series_number.is_(None), R.series_number, R.series_uid]
        if lv == IMAGE:
            order += [I.instance_number.is_(None), I.instance_number, I.sop_instance_uid]
        statement = statement.order_by(*order)
    if limit is not None:
        statement = statement.limit(limit)
    if offset:
        statement = statement.offset(offset)
    return Query(lv, statement, reads, extra_index, ignored, sequence_keys)


class _Matcher:
    """One key's matching condition, per the VR's rules, for this database."""

    def __init__(self, dialect: str, fuzzy: bool):
        self.dialect = dialect
        self.fuzzy = fuzzy

    def attr(self, attr: Attr, value: str) -> sa.ColumnElement[bool] | None:
        kind, column = attr.kind, attr.column
        if kind == "count":
            return None
        if kind == "pn" and attr.keyword == "PatientName":
            if self.fuzzy:
                return self.fuzzy_name(value)
            return self.any_of(value, lambda v: self.text(S.patient_name_norm, normalized_name(v)))
        if kind == "modalities":
            # Any series of the study of that modality (the series table's index answers it).
            return sa.exists().where(R.study_uid == S.study_uid, self.any_of(value, lambda v: self.text(R.modality, v)))
        if kind == "uid":
            values = [v.strip() for v in value.split("\\") if v.strip()]
            return column == values[0] if len(values) == 1 else column.in_(values) if values else None
        if kind == "date":
            return self.any_of(value, lambda v: self.range(attr.keyword, column, v, _DATE, pad=False))
        if kind == "time":
            return self.any_of(value, lambda v: self.range(attr.keyword, column, v, _TIME, pad=True))
        if kind == "int":
            def one(v: str):
                try:
                    return column == int(v)
                except ValueError:
                    raise QueryError(f"{attr.keyword} debe ser un número entero, no {v[:32]!r}") from None

            return self.any_of(value, one)
        return self.any_of(value, lambda v: self.text(column, v))

    @staticmethod
    def any_of(value: str, one: Callable[[str], sa.ColumnElement[bool] | None]) -> sa.ColumnElement[bool] | None:
        parts = [c for v in value.split("\\") if v != "" for c in [one(v)] if c is not None]
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else sa.or_(*parts)

    def text(self, column: sa.ColumnElement, value: str) -> sa.ColumnElement[bool] | None:
        if "*" not in value and "?" not in value:
            return column == value
        if set(value) <= {"*"}:
            return None  # "*" matches everything, empty values included
        return self.pattern(column, value)

    def pattern(self, column: sa.ColumnElement, value: str) -> sa.ColumnElement[bool]:
        """Case-sensitive wildcard match (``*``, ``?``): GLOB on SQLite (its LIKE ignores case),
        LIKE on PostgreSQL, both able to use an index for a literal prefix."""
        if self.dialect == "sqlite":
            return column.op("GLOB")(value.replace("[", "[[]"))
        escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("*", "%").replace("?", "_")
        return column.like(escaped, escape="\\")

    def range(self, keyword: str, column: sa.ColumnElement, value: str, form: re.Pattern, *, pad: bool) -> sa.ColumnElement[bool]:
        value = value.strip()
        if "-" in value:
            low, _, high = value.partition("-")
            low, high = low.strip(), high.strip()
        else:
            low = high = value
        for part in (low, high):
            if part and not form.match(part):
                what = "fecha (AAAAMMDD)" if not pad else "hora (HHMMSS)"
                raise QueryError(f"{keyword}: {value[:40]!r} no es una {what} ni un rango A-B")
        if not low and not high:
            raise QueryError(f"{keyword}: el rango {value[:40]!r} no tiene límites")
        parts = []
        if low:
            parts.append(column >= low)
        if high:
            # A time bound of lower precision includes what follows it ("1200" covers 12:00:59).
            parts.append(column <= (high + "~" if pad else high))
        parts.append(column != "")  # an absent date is in no range
        return sa.and_(*parts)

    def fuzzy_name(self, value: str) -> sa.ColumnElement[bool] | None:
        """Every word of the value is the start of a word of the name (any component, any
        order), accents and case ignored: the way Spanish names with two surnames are typed.
        Answered from the name-word table (dicom_study_name), one index range a word."""
        words = [w for w in re.split(r"[\s^,*?=\-]+", normalized_name(value.replace("^", " "))) if w]
        if not words:
            return None
        parts = [S.study_uid.in_(sa.select(N.study_uid).where(self.pattern(N.token, w[:64] + "*"))) for w in dict.fromkeys(words)]
        return sa.and_(*parts)


def supported(keyword: str) -> bool:
    """Whether the index can match on ``keyword`` (others are returned empty)."""
    attr = ATTRS.get(keyword)
    return attr is not None and attr.kind != "count"


__all__ = ["ATTRS", "DEFAULTS", "LEVELS", "Query", "QueryError", "UNIQUE", "find", "plan", "supported"]
