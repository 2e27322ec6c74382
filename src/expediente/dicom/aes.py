"""The application entities this archive knows (modalities, PACS, viewers, C-MOVE destinations).

Read from the TOML file named by ``dicom_aes``::

    [[ae]]
    title = "CT_URG_01"          # calling AE title of the modality
    host = "10.1.2.3"            # where C-MOVE sends to it (destinations only)
    port = 104
    institution = "DFIMS000011"  # CLUES: queries are scoped to this institution's studies
    services = ["store", "find", "move", "get"]   # default: all four

An association from a calling AE title that is not listed is refused (A-ASSOCIATE-RJ), and a
request for a service the AE is not allowed is answered with a DIMSE refusal status.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

SERVICES = frozenset({"store", "find", "move", "get"})


class AeConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class KnownAE:
    title: str
    institution: str = ""
    host: str = ""
    port: int = 0
    services: frozenset[str] = SERVICES

    def may(self, service: str) -> bool:
        return service in self.services

    @property
    def is_destination(self) -> bool:
        return bool(self.host and self.port)


class AeDirectory:
    def __init__(self, aes: list[KnownAE] | tuple[KnownAE, ...] = ()):
        self._by_title = {ae.title: ae for ae in aes}

    def get(self, title: str) -> KnownAE | None:
        return self._by_title.get(title.strip())

    def __iter__(self):
        return iter(self._by_title.values())

    def __len__(self) -> int:
        return len(self._by_title)

    @classmethod
    def load(cls, path: str | Path) -> AeDirectory:
        if not path:
            return cls()
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise AeConfigError(f"no se pudo leer la lista de AE {path}: {exc}") from None
        return cls([_known_ae(entry, i) for i, entry in enumerate(data.get("ae", []))])


def _known_ae(entry: dict, i: int) -> KnownAE:
    title = str(entry.get("title", "")).strip()
    if not title or len(title) > 16 or "\\" in title:
        raise AeConfigError(f"ae[{i}]: el título AE debe tener de 1 a 16 caracteres, sin '\\\\': {title!r}")
    services = frozenset(entry.get("services", SERVICES))
    if unknown := services - SERVICES:
        raise AeConfigError(f"ae[{i}] ({title}): servicios desconocidos {sorted(unknown)}; válidos: {sorted(SERVICES)}")
    return KnownAE(
        title=title,
        institution=str(entry.get("institution", "")),
        host=str(entry.get("host", "")),
        port=int(entry.get("port", 0)),
        services=services,
    )
