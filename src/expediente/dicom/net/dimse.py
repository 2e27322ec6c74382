"""DIMSE command sets (PS3.7 section 9.3, Annex E): group 0000 in implicit VR little endian,
encoded and decoded by hand. A command set is a dict of element number -> value (int or str)."""

from __future__ import annotations

import struct

# Command fields
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_GET_RQ, C_GET_RSP = 0x0010, 0x8010
C_FIND_RQ, C_FIND_RSP = 0x0020, 0x8020
C_MOVE_RQ, C_MOVE_RSP = 0x0021, 0x8021
C_ECHO_RQ, C_ECHO_RSP = 0x0030, 0x8030
C_CANCEL_RQ = 0x0FFF
NO_DATASET = 0x0101
HAS_DATASET = 0x0000

# Elements (group 0000)
AFFECTED_SOP_CLASS = 0x0002
REQUESTED_SOP_CLASS = 0x0003
COMMAND_FIELD = 0x0100
MESSAGE_ID = 0x0110
RESPONDED_TO = 0x0120
MOVE_DESTINATION = 0x0600
PRIORITY = 0x0700
DATASET_TYPE = 0x0800
STATUS = 0x0900
OFFENDING_ELEMENT = 0x0901
ERROR_COMMENT = 0x0902
AFFECTED_SOP_INSTANCE = 0x1000
REQUESTED_SOP_INSTANCE = 0x1001
REMAINING = 0x1020
COMPLETED = 0x1021
FAILED = 0x1022
WARNING = 0x1023
MOVE_ORIGINATOR_AE = 0x1030
MOVE_ORIGINATOR_ID = 0x1031

_US = frozenset({COMMAND_FIELD, MESSAGE_ID, RESPONDED_TO, PRIORITY, DATASET_TYPE, STATUS, REMAINING, COMPLETED, FAILED, WARNING, MOVE_ORIGINATOR_ID})
_UI = frozenset({AFFECTED_SOP_CLASS, REQUESTED_SOP_CLASS, AFFECTED_SOP_INSTANCE, REQUESTED_SOP_INSTANCE})
_ELEMENT = struct.Struct("<HHI")


class DimseError(ValueError):
    """A command set that cannot be decoded."""


def decode(data: bytes | memoryview) -> dict[int, int | str | bytes]:
    """A command set's elements by element number: US as int, UI/AE/LO as str, others bytes."""
    out: dict[int, int | str | bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 8:
            raise DimseError("conjunto de comando truncado")
        group, element, length = _ELEMENT.unpack_from(data, pos)
        pos += 8
        if group != 0 or pos + length > end:
            raise DimseError(f"elemento ({group:04X},{element:04X}) inválido en el comando")
        value = data[pos : pos + length]
        pos += length
        if element in _US:
            if length != 2:
                raise DimseError(f"(0000,{element:04X}) debe medir 2 bytes")
            out[element] = value[0] | (value[1] << 8)
        elif element in (0x0000,):
            continue
        elif element == OFFENDING_ELEMENT:
            out[element] = bytes(value)
        else:
            out[element] = bytes(value).decode("ascii", "replace").rstrip("\x00 ") if element != ERROR_COMMENT else bytes(value).decode("latin-1").rstrip("\x00 ")
    if COMMAND_FIELD not in out:
        raise DimseError("el comando no tiene CommandField")
    return out


def _value(element: int, value: int | str | bytes) -> bytes:
    if element in _US:
        return struct.pack("<H", value)
    if isinstance(value, bytes):
        raw = value
    elif element == ERROR_COMMENT:
        raw = value.encode("latin-1", "replace")[:64]
    else:
        raw = value.encode("ascii", "replace")
    if len(raw) % 2:
        raw += b"\x00" if element in _UI else b" "
    return raw


def encode(command: dict[int, int | str | bytes]) -> bytes:
    """A command set with its group length, elements in ascending order."""
    body = b"".join(_ELEMENT.pack(0, el, len(raw)) + raw for el, raw in ((el, _value(el, v)) for el, v in sorted(command.items()) if el != 0))
    return _ELEMENT.pack(0, 0, 4) + struct.pack("<I", len(body)) + body


def response(request: dict, field: int, status: int, *, dataset: bool = False, **extra) -> dict:
    """The response to ``request`` with ``status`` (and the request's SOP class/instance)."""
    rsp: dict[int, int | str | bytes] = {COMMAND_FIELD: field, RESPONDED_TO: request.get(MESSAGE_ID, 0), DATASET_TYPE: HAS_DATASET if dataset else NO_DATASET, STATUS: status}
    if sop_class := request.get(AFFECTED_SOP_CLASS):
        rsp[AFFECTED_SOP_CLASS] = sop_class
    if field in (C_STORE_RSP,) and (uid := request.get(AFFECTED_SOP_INSTANCE)):
        rsp[AFFECTED_SOP_INSTANCE] = uid
    for key, value in extra.items():
        if value is not None:
            rsp[_NAMES[key]] = value
    return rsp


_NAMES = {
    "error_comment": ERROR_COMMENT,
    "remaining": REMAINING,
    "completed": COMPLETED,
    "failed": FAILED,
    "warning": WARNING,
}
