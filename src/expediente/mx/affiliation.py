"""Derechohabiencia: the institution (or none) that covers a person's care, as Coverage.type codes.

Codes of ``AFFILIATION_SYSTEM``; the public institutions are also the values of their
Organization's ``INSTITUTION_SYSTEM`` identifier (IMSS, ISSSTE...), so a Coverage may name the
affiliation by its type or by its payor's logical identifier.
"""

from __future__ import annotations

AFFILIATIONS: dict[str, str] = {
    "IMSS": "Instituto Mexicano del Seguro Social (IMSS)",
    "ISSSTE": "Instituto de Seguridad y Servicios Sociales de los Trabajadores del Estado (ISSSTE)",
    "IMSS-BIENESTAR": "IMSS-Bienestar",
    "PEMEX": "Petróleos Mexicanos (PEMEX)",
    "SEDENA": "Secretaría de la Defensa Nacional (SEDENA)",
    "SEMAR": "Secretaría de Marina (SEMAR)",
    "PRIVADO": "Seguro o servicio médico privado",
    "NINGUNA": "Sin derechohabiencia",
}
PUBLIC_INSTITUTIONS = frozenset(AFFILIATIONS) - {"PRIVADO", "NINGUNA"}
