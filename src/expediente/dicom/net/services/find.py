"""C-FIND (patient and study root): the archive's index, scoped to the AE's institution, one
Pending response per match, C-CANCEL honoured between matches."""

from __future__ import annotations

import logging

from expediente.dicom.archive import Scope
from expediente.dicom.net import dimse
from expediente.dicom.net.association import PATIENT_ROOT
from expediente.dicom.net.identifier import BadIdentifier, decode_identifier, encode_identifier
from expediente.dicom.query import QueryError
from expediente.dicom.status import CANCEL, CANNOT_UNDERSTAND, IDENTIFIER_MISMATCH, NOT_AUTHORIZED, PENDING, SUCCESS, UNABLE_TO_PROCESS

log = logging.getLogger("expediente.dicom.net")


def scope_of(session) -> Scope:
    return Scope(institution=session.ae.institution or None)


def read_request(session, ctx: int, command: dict, service: str, field: int) -> tuple[str, dict] | None:
    """The request's (level, keys), or None once a refusal was answered."""
    abstract, syntax = session.accepted.contexts[ctx]
    data = session.link.dataset(ctx) if command.get(dimse.DATASET_TYPE, dimse.NO_DATASET) != dimse.NO_DATASET else b""
    if not session.ae.may(service):
        session.refused += 1
        refuse(session, ctx, command, field, NOT_AUTHORIZED, f"el AE {session.ae.title} no está autorizado para {service.upper()}")
        return None
    try:
        level, keys = decode_identifier(data, syntax)
    except BadIdentifier as exc:
        refuse(session, ctx, command, field, CANNOT_UNDERSTAND, str(exc))
        return None
    if level == "PATIENT" and abstract not in PATIENT_ROOT:
        refuse(session, ctx, command, field, IDENTIFIER_MISMATCH, "el nivel PATIENT solo existe en el modelo Patient Root")
        return None
    return level, keys


def refuse(session, ctx: int, command: dict, field: int, status: int, reason: str) -> None:
    session.link.send(ctx, dimse.response(command, field, status, error_comment=reason))


def cancelled(session) -> bool:
    """True when the peer sent C-CANCEL for this operation (checked without waiting)."""
    link = session.link
    if not link.readable():
        return False
    _, command = link.command()
    if command[dimse.COMMAND_FIELD] != dimse.C_CANCEL_RQ:
        link.abort()
        from expediente.dicom.net.link import Aborted

        raise Aborted("operación asíncrona no negociada")
    return True


def c_find(session, ctx: int, command: dict) -> None:
    request = read_request(session, ctx, command, "find", dimse.C_FIND_RSP)
    if request is None:
        return
    level, keys = request
    _, syntax = session.accepted.contexts[ctx]
    try:
        matches = session.archive.find(level, keys, scope=scope_of(session))
    except QueryError as exc:
        refuse(session, ctx, command, dimse.C_FIND_RSP, IDENTIFIER_MISMATCH, str(exc))
        return
    except Exception:  # noqa: BLE001
        log.exception("dimse: C-FIND falló")
        refuse(session, ctx, command, dimse.C_FIND_RSP, UNABLE_TO_PROCESS, "error interno al consultar; intente de nuevo")
        return
    for match in matches:
        if cancelled(session):
            session.link.send(ctx, dimse.response(command, dimse.C_FIND_RSP, CANCEL))
            return
        identifier = encode_identifier(match, level, syntax, requested=keys, ae_title=session.settings.dicom_ae_title)
        session.link.send(ctx, dimse.response(command, dimse.C_FIND_RSP, PENDING, dataset=True), identifier)
        session.found += 1
        session.note_study(str(match.get("StudyInstanceUID") or ""))
    session.link.send(ctx, dimse.response(command, dimse.C_FIND_RSP, SUCCESS))
