"""C-STORE: the hot path. Fragments go from the receive buffer straight into the archive's
Receipt; the response is sent only after ``receipt.finish()`` made the instance durable."""

from __future__ import annotations

import logging

from expediente.dicom.ingest import Refused
from expediente.dicom.net import dimse
from expediente.dicom.net.link import Aborted
from expediente.dicom.status import NOT_AUTHORIZED, OUT_OF_RESOURCES, SOP_CLASS_NOT_SUPPORTED, SUCCESS

log = logging.getLogger("expediente.dicom.net")


def c_store(session, ctx: int, command: dict) -> None:
    link = session.link
    abstract, syntax = session.accepted.contexts[ctx]
    fragments = link.fragments(ctx)
    sop_class = str(command.get(dimse.AFFECTED_SOP_CLASS, ""))
    sop_uid = str(command.get(dimse.AFFECTED_SOP_INSTANCE, ""))
    try:
        if not session.ae.may("store"):
            raise Refused(NOT_AUTHORIZED, f"el AE {session.ae.title} no está autorizado para almacenar (C-STORE)")
        if sop_class != abstract:
            raise Refused(SOP_CLASS_NOT_SUPPORTED, "la clase SOP del comando no corresponde al contexto de presentación")
        receipt = session.archive.begin_store(
            sop_class_uid=sop_class, sop_instance_uid=sop_uid, transfer_syntax=syntax, origin=session.origin
        )
        try:
            for fragment in fragments:
                receipt.write(fragment)
        except BaseException:
            receipt.abort()
            raise
        stored = receipt.finish()
    except Refused as refused:
        for _ in fragments:  # the rest of the data set is read and dropped
            pass
        session.refused += 1
        _answer(session, ctx, command, refused.status, refused.reason)
        return
    except Aborted:
        session.failed += 1
        raise
    except Exception:  # noqa: BLE001 - answered as a failure; the association goes on
        log.exception("dimse: C-STORE %s falló", sop_uid)
        for _ in fragments:
            pass
        session.failed += 1
        _answer(session, ctx, command, OUT_OF_RESOURCES, "error interno al guardar la instancia; intente de nuevo")
        return
    session.stored += 1
    session.note_study(stored.study_uid)
    link.send(ctx, dimse.response(command, dimse.C_STORE_RSP, SUCCESS))


def _answer(session, ctx: int, command: dict, status: int, reason: str) -> None:
    session.link.send(ctx, dimse.response(command, dimse.C_STORE_RSP, status, error_comment=reason))
