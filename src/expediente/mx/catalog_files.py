"""Reading catalog CSV files: the DGIS layout of its CIE-10 and CIE-9-MC catalogs, and a
generic code/display layout.

Tolerant of what institutions actually hand over: header names in any case, UTF-8 with or
without BOM or Latin-1 (Windows-1252), comma, semicolon, tab or pipe separated, codes with or
without the dot (``A000``, ``A00.0``; DGIS writes three-character CIE-10 codes with an ``X``
filler, ``I10X``). Strict about content: any bad row fails the whole file with its line
number, in Spanish, so a load never stores half a catalog.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass

from expediente.mx.catalog_types import DGIS_AGE_UNITS, AgeLimit, Concept

MAX_ROWS = 500_000

# Accepted header names (upper case) of each column; the first is the DGIS one.
CODE_HEADERS = ("CATALOG_KEY", "CLAVE", "CODIGO", "CÓDIGO", "CODE")
DISPLAY_HEADERS = ("NOMBRE", "PRO_NOMBRE", "DESCRIPCION", "DESCRIPCIÓN", "DISPLAY")
SEX_HEADERS = ("LSEX",)
LOW_HEADERS = ("LINF",)
HIGH_HEADERS = ("LSUP",)

_CIE10 = re.compile(r"([A-Z][0-9]{2})(?:X|\.?([0-9]{1,2}))?")
_CIE9MC = re.compile(r"([0-9]{2})(?:\.?([0-9]{1,2}))?")
_DGIS_AGE = re.compile(r"([0-9]{1,3})([HDMA])")
_SEX_VALUES = {"": None, "NO": None, "AMBOS": None, "HOMBRE": "male", "MUJER": "female"}


class CatalogFileError(ValueError):
    """A file that cannot be loaded; ``str()`` is the Spanish reason, naming the line."""

    def __init__(self, message: str, line: int | None = None):
        self.line = line
        super().__init__(f"Línea {line}: {message}" if line else message)


def cie10_code(raw: str) -> str | None:
    """The canonical CIE-10 code (``"A00.0"``, ``"I10"``) of a DGIS key or a written code
    (``"A000"``, ``"a00.0"``, ``"I10X"``); None if it is not a CIE-10 code."""
    m = _CIE10.fullmatch(raw.strip().upper())
    if m is None:
        return None
    return m[1] + (f".{m[2]}" if m[2] else "")


def cie9mc_code(raw: str) -> str | None:
    """The canonical CIE-9-MC procedure code (``"81.51"``) of ``"8151"`` or ``"81.51"``."""
    m = _CIE9MC.fullmatch(raw.strip())
    if m is None:
        return None
    return m[1] + (f".{m[2]}" if m[2] else "")


def generic_code(raw: str) -> str | None:
    code = " ".join(raw.split())
    return code if 0 < len(code) <= 64 else None


def decode(data: bytes) -> str:
    """UTF-8 (a BOM is dropped), else Windows-1252, else Latin-1 (which decodes anything)."""
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


@dataclass(frozen=True)
class FileLayout:
    """How one kind of catalog reads its codes (``normalize``) and names them in errors."""

    code_name: str  # "CIE-10", in "no es un código CIE-10 válido"
    normalize: Callable[[str], str | None]


LAYOUTS = {
    "cie10": FileLayout("CIE-10", cie10_code),
    "cie9mc": FileLayout("CIE-9-MC", cie9mc_code),
    "generic": FileLayout("del catálogo", generic_code),
}


def parse(data: bytes, kind: str) -> list[Concept]:
    """The concepts of a catalog file; CatalogFileError (with the line) at the first bad row."""
    layout = LAYOUTS[kind]
    text = decode(data)
    first_line = text.split("\n", 1)[0]
    delimiter = max(",;\t|", key=first_line.count)
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(rows)
    except StopIteration:
        raise CatalogFileError("El archivo está vacío") from None
    columns = _columns(header)
    concepts: list[Concept] = []
    seen: dict[str, int] = {}
    try:
        for row in rows:
            line = rows.line_num
            if not any(cell.strip() for cell in row):
                continue
            concept = _concept(row, columns, layout, line)
            if concept.code in seen:
                raise CatalogFileError(f"la clave {concept.code} se repite (ya está en la línea {seen[concept.code]})", line)
            seen[concept.code] = line
            concepts.append(concept)
            if len(concepts) > MAX_ROWS:
                raise CatalogFileError(f"el archivo tiene más de {MAX_ROWS} renglones", line)
    except csv.Error as exc:
        raise CatalogFileError(f"el archivo no es un CSV válido ({exc})", rows.line_num) from None
    if not concepts:
        raise CatalogFileError("El archivo no tiene renglones con claves después del encabezado")
    return concepts


def _columns(header: list[str]) -> dict[str, int]:
    names = [cell.strip().lstrip("\ufeff").strip('"').upper() for cell in header]

    def find(options: tuple[str, ...]) -> int | None:
        return next((names.index(o) for o in options if o in names), None)

    found = {
        "code": find(CODE_HEADERS),
        "display": find(DISPLAY_HEADERS),
        "sex": find(SEX_HEADERS),
        "low": find(LOW_HEADERS),
        "high": find(HIGH_HEADERS),
    }
    for key, options in (("code", CODE_HEADERS), ("display", DISPLAY_HEADERS)):
        if found[key] is None:
            raise CatalogFileError(f"el encabezado no tiene la columna {' ni '.join(options[:3])}", 1)
    return {k: v for k, v in found.items() if v is not None}


def _concept(row: list[str], columns: dict[str, int], layout: FileLayout, line: int) -> Concept:
    def cell(key: str) -> str:
        i = columns.get(key)
        return row[i].strip() if i is not None and i < len(row) else ""

    raw = cell("code")
    code = layout.normalize(raw)
    if code is None:
        raise CatalogFileError(f"la clave '{raw[:40]}' no es un código {layout.code_name} válido", line)
    display = " ".join(cell("display").split())
    if not display:
        raise CatalogFileError(f"la clave {code} no tiene descripción (columna NOMBRE)", line)
    sex_text = cell("sex").upper()
    if sex_text not in _SEX_VALUES:
        raise CatalogFileError(f"LSEX de {code} es '{cell('sex')[:20]}'; se espera NO, HOMBRE o MUJER", line)
    low, high = _age(cell("low"), "LINF", code, line), _age(cell("high"), "LSUP", code, line)
    if low is not None and high is not None and low.unit == high.unit and low.value > high.value:
        raise CatalogFileError(f"la edad mínima de {code} ({low.spanish()}) es mayor que la máxima ({high.spanish()})", line)
    return Concept(code, display, _SEX_VALUES[sex_text], low, high)


def _age(raw: str, column: str, code: str, line: int) -> AgeLimit | None:
    text = raw.upper()
    if text in ("", "NO"):
        return None
    m = _DGIS_AGE.fullmatch(text)
    if m is None:
        raise CatalogFileError(f"{column} de {code} es '{raw[:20]}'; se espera NO o tres dígitos y H, D, M o A (p. ej. 010A)", line)
    value = int(m[1])
    if value == 0 and column == "LINF":
        return None  # "from age zero" is no lower limit
    return AgeLimit(value, DGIS_AGE_UNITS[m[2]])
