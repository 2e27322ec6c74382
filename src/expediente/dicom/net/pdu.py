"""Upper-layer PDUs (PS3.8 section 9): read from a socket into one buffer, encoded by hand.

A PDU is type (1), reserved (1), length (4, big endian), body. P-DATA-TF bodies are parsed in
place: each PDV is handed out as a memoryview of the receive buffer, never copied.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA, RELEASE_RQ, RELEASE_RP, ABORT = 1, 2, 3, 4, 5, 6, 7
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
_HEAD = struct.Struct(">BxI")
_PDV = struct.Struct(">IBB")


class PduError(Exception):
    """The peer sent something that is not a valid PDU (answered with A-ABORT)."""


class Closed(Exception):
    """The peer closed the connection."""


class Reader:
    """Reads whole PDUs from a socket into one reusable buffer."""

    def __init__(self, sock: socket.socket, max_pdu: int):
        self.sock = sock
        # Room for the largest PDU we accept plus the next PDU's start: few recv calls.
        self._buf = bytearray(max(max_pdu, 64 * 1024) + 64 * 1024)
        self._view = memoryview(self._buf)
        self._start = self._end = 0
        self.limit = max_pdu + 6 if max_pdu else 1 << 31

    def _need(self, n: int) -> None:
        if self._start + n > len(self._buf):
            if n > len(self._buf):  # a bigger PDU than the buffer (max PDU 0 = unlimited)
                self._buf.extend(bytes(n - len(self._buf) + 64 * 1024))
                self._view = memoryview(self._buf)
            size = self._end - self._start
            self._view[:size] = self._view[self._start : self._end]
            self._start, self._end = 0, size
        while self._end - self._start < n:
            got = self.sock.recv_into(self._view[self._end :])
            if not got:
                raise Closed()
            self._end += got

    def pending(self) -> bool:
        """True when a whole PDU header is already buffered."""
        return self._end - self._start >= 6

    def read(self) -> tuple[int, memoryview]:
        """The next PDU: (type, body). The body is valid until the next call."""
        self._need(6)
        kind, length = _HEAD.unpack_from(self._buf, self._start)
        if length + 6 > self.limit or kind < 1 or kind > 7:
            raise PduError(f"PDU tipo {kind} de {length} bytes")
        self._need(6 + length)
        body = self._view[self._start + 6 : self._start + 6 + length]
        self._start += 6 + length
        return kind, body


def pdvs(body: memoryview):
    """The PDVs of a P-DATA-TF body: (context id, is command, is last, data view)."""
    pos, end = 0, len(body)
    while pos < end:
        if end - pos < 6:
            raise PduError("PDV truncado")
        length, ctx, control = _PDV.unpack_from(body, pos)
        if length < 2 or pos + 4 + length > end:
            raise PduError("longitud de PDV inválida")
        yield ctx, bool(control & 1), bool(control & 2), body[pos + 6 : pos + 4 + length]
        pos += 4 + length


def p_data(ctx: int, command: bool, last: bool, data: bytes | memoryview) -> bytes:
    """One P-DATA-TF PDU with one PDV (the header only when ``data`` is sent separately)."""
    return struct.pack(">BxIIBB", P_DATA, len(data) + 6, len(data) + 2, ctx, (1 if command else 0) | (2 if last else 0)) + bytes(data)


def p_data_head(ctx: int, command: bool, last: bool, length: int) -> bytes:
    return struct.pack(">BxIIBB", P_DATA, length + 6, length + 2, ctx, (1 if command else 0) | (2 if last else 0))


def pdu(kind: int, body: bytes) -> bytes:
    return _HEAD.pack(kind, len(body)) + body


RELEASE_RQ_PDU = pdu(RELEASE_RQ, b"\x00" * 4)
RELEASE_RP_PDU = pdu(RELEASE_RP, b"\x00" * 4)


def abort_pdu(source: int = 2, reason: int = 0) -> bytes:
    return pdu(ABORT, bytes([0, 0, source, reason]))


def reject_pdu(result: int, source: int, reason: int) -> bytes:
    return pdu(ASSOCIATE_RJ, bytes([0, result, source, reason]))


# ---------------------------------------------------------------------- association items


@dataclass
class Context:
    id: int
    abstract_syntax: str = ""
    transfer_syntaxes: list[str] = field(default_factory=list)
    result: int = 0  # AC: 0 accepted, 3 abstract syntax not supported, 4 transfer syntaxes not supported


@dataclass
class Role:
    sop_class: str
    scu: bool
    scp: bool


@dataclass
class AssociateRq:
    called: str = ""
    calling: str = ""
    contexts: list[Context] = field(default_factory=list)
    max_pdu: int = 0
    implementation_uid: str = ""
    implementation_version: str = ""
    roles: list[Role] = field(default_factory=list)
    application_context: str = APPLICATION_CONTEXT


def _uid(raw: memoryview | bytes) -> str:
    return bytes(raw).decode("ascii", "replace").rstrip("\x00 ")


def _items(body: memoryview, pos: int, end: int):
    while pos < end:
        if end - pos < 4:
            raise PduError("elemento de asociación truncado")
        kind = body[pos]
        (length,) = struct.unpack_from(">H", body, pos + 2)
        if pos + 4 + length > end:
            raise PduError("elemento de asociación fuera de límites")
        yield kind, body[pos + 4 : pos + 4 + length]
        pos += 4 + length


def decode_associate(body: memoryview) -> AssociateRq:
    """An A-ASSOCIATE-RQ or -AC body (the AC's contexts carry a result and one syntax)."""
    if len(body) < 68:
        raise PduError("A-ASSOCIATE truncado")
    rq = AssociateRq(called=bytes(body[4:20]).decode("ascii", "replace").strip(), calling=bytes(body[20:36]).decode("ascii", "replace").strip())
    for kind, item in _items(body, 68, len(body)):
        if kind == 0x10:
            rq.application_context = _uid(item)
        elif kind in (0x20, 0x21):
            if len(item) < 4:
                raise PduError("contexto de presentación truncado")
            ctx = Context(id=item[0], result=item[2] if kind == 0x21 else 0)
            for sub, value in _items(item, 4, len(item)):
                if sub == 0x30:
                    ctx.abstract_syntax = _uid(value)
                elif sub == 0x40:
                    ctx.transfer_syntaxes.append(_uid(value))
            rq.contexts.append(ctx)
        elif kind == 0x50:
            for sub, value in _items(item, 0, len(item)):
                if sub == 0x51 and len(value) >= 4:
                    (rq.max_pdu,) = struct.unpack_from(">I", value)
                elif sub == 0x52:
                    rq.implementation_uid = _uid(value)
                elif sub == 0x55:
                    rq.implementation_version = _uid(value)
                elif sub == 0x54 and len(value) >= 2:
                    (n,) = struct.unpack_from(">H", value)
                    if len(value) >= 4 + n:
                        rq.roles.append(Role(_uid(value[2 : 2 + n]), bool(value[2 + n]), bool(value[3 + n])))
    return rq


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BxH", kind, len(value)) + value


def _ae(title: str) -> bytes:
    return title.encode("ascii", "replace")[:16].ljust(16)


def _user_info(max_pdu: int, implementation_uid: str, version: str, roles: list[Role]) -> bytes:
    subs = [_item(0x51, struct.pack(">I", max_pdu)), _item(0x52, implementation_uid.encode())]
    for role in roles:
        uid = role.sop_class.encode()
        subs.append(_item(0x54, struct.pack(">H", len(uid)) + uid + bytes([int(role.scu), int(role.scp)])))
    if version:
        subs.append(_item(0x55, version.encode()))
    return _item(0x50, b"".join(subs))


def encode_associate(rq: AssociateRq, *, accept: bool) -> bytes:
    """An A-ASSOCIATE-RQ (``accept`` False) or -AC PDU."""
    head = struct.pack(">HH", 1, 0) + _ae(rq.called) + _ae(rq.calling) + b"\x00" * 32
    items = [_item(0x10, rq.application_context.encode())]
    for ctx in rq.contexts:
        if accept:
            ts = ctx.transfer_syntaxes[0] if ctx.transfer_syntaxes and ctx.result == 0 else ""
            items.append(_item(0x21, bytes([ctx.id, 0, ctx.result, 0]) + _item(0x40, ts.encode())))
        else:
            subs = _item(0x30, ctx.abstract_syntax.encode()) + b"".join(_item(0x40, t.encode()) for t in ctx.transfer_syntaxes)
            items.append(_item(0x20, bytes([ctx.id, 0, 0, 0]) + subs))
    items.append(_user_info(rq.max_pdu, rq.implementation_uid, rq.implementation_version, rq.roles))
    return pdu(ASSOCIATE_AC if accept else ASSOCIATE_RQ, head + b"".join(items))
