"""multipart/related (RFC 2387) for DICOMweb: an incremental reader for uploads and the framing
of streamed answers.

The reader is fed the request body chunk by chunk and returns events (a part's headers, a piece
of its body, its end), so a STOW-RS upload of any size goes to the archive as it arrives
without being held in memory.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

MAX_PART_HEADERS = 16 * 1024


class MalformedMultipart(ValueError):
    """The body is not the multipart/related message its Content-Type announces (Spanish)."""


@dataclass(frozen=True, slots=True)
class PartStart:
    headers: dict[str, str]  # lower-case names

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


@dataclass(frozen=True, slots=True)
class PartData:
    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    pass


Event = PartStart | PartData | PartEnd


class MultipartReader:
    """Splits a multipart body fed in chunks (``feed``) into events; ``close`` checks the end."""

    def __init__(self, boundary: str):
        if not boundary or len(boundary) > 70:
            raise MalformedMultipart("el parámetro boundary de Content-Type falta o excede 70 caracteres")
        # A leading CRLF lets the first delimiter (which may open the body) match like the others.
        self._delimiter = b"\r\n--" + boundary.encode("latin-1")
        self._buffer = bytearray(b"\r\n")
        self._state = "preamble"  # preamble | after-delimiter | headers | body | done
        self.parts = 0

    def feed(self, chunk: bytes) -> list[Event]:
        if self._state == "done":
            return []  # the epilogue is ignored
        self._buffer += chunk
        events: list[Event] = []
        while self._step(events):
            pass
        return events

    def close(self) -> list[Event]:
        """The body ended: an unfinished message is malformed."""
        if self._state != "done":
            if self._state == "preamble":
                raise MalformedMultipart("el cuerpo no contiene ninguna parte delimitada por el boundary declarado")
            raise MalformedMultipart("el mensaje multipart termina sin el delimitador final (--boundary--)")
        return []

    def _step(self, events: list[Event]) -> bool:
        buf = self._buffer
        if self._state == "preamble":
            at = buf.find(self._delimiter)
            if at < 0:
                del buf[: max(0, len(buf) - len(self._delimiter) + 1)]
                return False
            del buf[: at + len(self._delimiter)]
            self._state = "after-delimiter"
            return True
        if self._state == "after-delimiter":
            if len(buf) < 2:
                return False
            if buf[:2] == b"--":
                self._state = "done"
                buf.clear()
                return False
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > 256:
                    raise MalformedMultipart("delimitador multipart mal formado")
                return False
            if buf[:end].strip(b" \t"):
                raise MalformedMultipart("delimitador multipart mal formado")
            del buf[: end + 2]
            self._state = "headers"
            return True
        if self._state == "headers":
            end = buf.find(b"\r\n\r\n")
            if buf.startswith(b"\r\n"):  # a part without headers
                end, skip = 0, 2
            else:
                skip = 4
            if end < 0:
                if len(buf) > MAX_PART_HEADERS:
                    raise MalformedMultipart(f"los encabezados de una parte exceden {MAX_PART_HEADERS} bytes")
                return False
            events.append(PartStart(_headers(bytes(buf[:end]))))
            self.parts += 1
            del buf[: end + skip]
            self._state = "body"
            return True
        if self._state == "body":
            at = buf.find(self._delimiter)
            if at < 0:
                keep = len(self._delimiter) - 1
                if len(buf) > keep:
                    events.append(PartData(bytes(buf[: len(buf) - keep])))
                    del buf[: len(buf) - keep]
                return False
            if at:
                events.append(PartData(bytes(buf[:at])))
            events.append(PartEnd())
            del buf[: at + len(self._delimiter)]
            self._state = "after-delimiter"
            return True
        return False


def _headers(raw: bytes) -> dict[str, str]:
    headers = {}
    for line in raw.decode("latin-1").split("\r\n"):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise MalformedMultipart(f"encabezado de parte mal formado: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


def media_params(value: str) -> tuple[str, dict[str, str]]:
    """``type/subtype; a=b; c="d"`` → ("type/subtype", {"a": "b", "c": "d"}) (names lower-case)."""
    parts = _split(value, ";")
    media = parts[0].strip().lower() if parts else ""
    params = {}
    for item in parts[1:]:
        name, sep, val = item.partition("=")
        if sep:
            val = val.strip()
            if len(val) >= 2 and val[0] == val[-1] == '"':
                val = val[1:-1]
            params[name.strip().lower()] = val
    return media, params


def _split(value: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes."""
    out, current, quoted = [], [], False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return out


def split_list(value: str) -> list[str]:
    """An Accept-like header's comma-separated items (commas inside quotes kept)."""
    return [item for item in _split(value, ",") if item.strip()]


class MultipartWriter:
    """Frames the parts of a multipart/related answer (written as they are produced)."""

    def __init__(self, part_type: str):
        self.boundary = uuid.uuid4().hex
        self.part_type = part_type
        self._first = True

    def content_type(self, **params: str) -> str:
        extra = "".join(f"; {k.replace('_', '-')}={v}" for k, v in params.items() if v)
        return f'multipart/related; type="{self.part_type}"; boundary={self.boundary}{extra}'

    def part_header(self, content_type: str | None = None, length: int | None = None) -> bytes:
        lead = b"" if self._first else b"\r\n"
        self._first = False
        head = f"--{self.boundary}\r\nContent-Type: {content_type or self.part_type}\r\n"
        if length is not None:
            head += f"Content-Length: {length}\r\n"
        return lead + head.encode("latin-1") + b"\r\n"

    def end(self) -> bytes:
        return f"\r\n--{self.boundary}--\r\n".encode("latin-1")
