"""C-MOVE and C-GET: the instances an identifier names (within the AE's institution) sent as
C-STORE sub-operations, exactly as stored where the peer accepts their syntax (else converted
losslessly, ``offer.py``): to a known destination AE over a sub-association (C-MOVE) or back on
the same association (C-GET). Pending responses carry the counts."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from expediente.dicom.archive import InstanceRef
from expediente.dicom.net import dimse, offer
from expediente.dicom.net.identifier import UNIQUE
from expediente.dicom.net.scu import AssociationRefused, Requestor
from expediente.dicom.net.services.find import cancelled, read_request, refuse, scope_of
from expediente.dicom.query import QueryError
from expediente.dicom.status import (
    CANCEL,
    IDENTIFIER_MISMATCH,
    MOVE_DESTINATION_UNKNOWN,
    PENDING,
    SUB_OPERATIONS_FAILED,
    SUCCESS,
    UNABLE_TO_PROCESS,
)

log = logging.getLogger("expediente.dicom.net")
UNABLE_TO_PERFORM_SUBOPERATIONS = 0xA702


@dataclass
class Counts:
    remaining: int
    completed: int = 0
    failed: int = 0
    warning: int = 0

    def done(self, status: int) -> None:
        self.remaining -= 1
        if status == SUCCESS:
            self.completed += 1
        elif (status & 0xF000) == 0xB000:
            self.warning += 1
        else:
            self.failed += 1


def instances(session, level: str, keys: dict) -> list[InstanceRef]:
    """The stored instances the identifier's unique keys name, visible to the AE."""
    archive, scope = session.archive, scope_of(session)
    unique = str(keys.get(UNIQUE[level], "")).strip()
    if not unique or "*" in unique or "?" in unique:
        raise QueryError(f"falta el atributo único {UNIQUE[level]} (sin comodines) para el nivel {level}")
    query_level = "STUDY" if level == "PATIENT" else level
    match_keys = {k: str(keys[k]) for k in (UNIQUE[lv] for lv in ("PATIENT", "STUDY", "SERIES", "IMAGE")) if str(keys.get(k, "")).strip()}
    refs: list[InstanceRef] = []
    seen: set[tuple] = set()
    for match in archive.find(query_level, match_keys, scope=scope):
        key = (match.get("StudyInstanceUID"), match.get("SeriesInstanceUID") if level in ("SERIES", "IMAGE") else None, match.get("SOPInstanceUID") if level == "IMAGE" else None)
        if key in seen:
            continue
        seen.add(key)
        refs += archive.instances(study_uid=key[0], series_uid=key[1], sop_uid=key[2], scope=scope)
    return refs


def _final(session, ctx, command, field, counts: Counts, cancelled_: bool) -> None:
    status = CANCEL if cancelled_ else SUB_OPERATIONS_FAILED if counts.failed or counts.warning else SUCCESS
    extra = {"completed": counts.completed, "failed": counts.failed, "warning": counts.warning}
    if cancelled_:
        extra["remaining"] = counts.remaining
    comment = f"{counts.failed} sub-operaciones fallidas" if counts.failed else None
    session.link.send(ctx, dimse.response(command, field, status, error_comment=comment, **extra))


def _pending(session, ctx, command, field, counts: Counts) -> None:
    session.link.send(ctx, dimse.response(command, field, PENDING, remaining=counts.remaining, completed=counts.completed, failed=counts.failed, warning=counts.warning))


def _resolve(session, ctx, command, field, service) -> list[InstanceRef] | None:
    request = read_request(session, ctx, command, service, field)
    if request is None:
        return None
    level, keys = request
    try:
        return instances(session, level, keys)
    except QueryError as exc:
        refuse(session, ctx, command, field, IDENTIFIER_MISMATCH, str(exc))
    except Exception:  # noqa: BLE001
        log.exception("dimse: C-%s falló", service.upper())
        refuse(session, ctx, command, field, UNABLE_TO_PROCESS, "error interno al buscar las instancias; intente de nuevo")
    return None


def c_move(session, ctx: int, command: dict) -> None:
    field = dimse.C_MOVE_RSP
    title = str(command.get(dimse.MOVE_DESTINATION, "")).strip()
    refs = _resolve(session, ctx, command, field, "move")
    if refs is None:
        return
    destination = session.aes.get(title)
    if destination is None or not destination.is_destination:
        refuse(session, ctx, command, field, MOVE_DESTINATION_UNKNOWN, f"destino de C-MOVE desconocido: {title[:16]!r}")
        return
    if not refs:
        _final(session, ctx, command, field, Counts(0), False)
        return
    try:
        scu = Requestor.open(
            destination.host, destination.port, calling=session.settings.dicom_ae_title, called=destination.title,
            proposals=offer.proposals(refs), max_pdu=session.settings.dicom_max_pdu,
        )
    except (AssociationRefused, OSError) as exc:
        refuse(session, ctx, command, field, UNABLE_TO_PERFORM_SUBOPERATIONS, f"no se pudo asociar con {destination.title}: {str(exc)[:80]}")
        return
    counts, stopped = Counts(len(refs)), False
    try:
        for ref in refs:
            if cancelled(session):
                stopped = True
                break
            try:
                sub_ctx, syntax = offer.choose(scu.context_for, ref)
                data = offer.payload(session.archive.read(ref), ref, syntax)
            except offer.NotSendable:
                status = UNABLE_TO_PERFORM_SUBOPERATIONS
            else:
                rsp = scu.store(sub_ctx, ref.sop_class_uid, ref.sop_instance_uid, data, originator=(session.ae.title, command.get(dimse.MESSAGE_ID, 0)))
                status = rsp.get(dimse.STATUS, 0xC000)
            counts.done(status)
            session.note_study(ref.study_uid)
            if counts.remaining:
                _pending(session, ctx, command, field, counts)
    finally:
        try:
            scu.release()
        except Exception:  # noqa: BLE001 - the destination may drop the connection
            pass
    session.moved += counts.completed + counts.warning
    _final(session, ctx, command, field, counts, stopped)


def c_get(session, ctx: int, command: dict) -> None:
    field = dimse.C_GET_RSP
    refs = _resolve(session, ctx, command, field, "get")
    if refs is None:
        return
    link = session.link
    counts, stopped, message_id = Counts(len(refs)), False, 0
    for ref in refs:
        if cancelled(session):
            stopped = True
            break
        try:
            if ref.sop_class_uid not in session.accepted.scp_role:
                raise offer.NotSendable("el solicitante no tomó el papel de SCP para esta clase")
            sub_ctx, syntax = offer.choose(session.accepted.context_for, ref)
            data = offer.payload(session.archive.read(ref), ref, syntax)
        except offer.NotSendable:
            counts.done(UNABLE_TO_PERFORM_SUBOPERATIONS)  # no context, no SCP role, or no conversion
        else:
            message_id = message_id % 65535 + 1
            store = {
                dimse.COMMAND_FIELD: dimse.C_STORE_RQ, dimse.MESSAGE_ID: message_id, dimse.PRIORITY: 0, dimse.DATASET_TYPE: dimse.HAS_DATASET,
                dimse.AFFECTED_SOP_CLASS: ref.sop_class_uid, dimse.AFFECTED_SOP_INSTANCE: ref.sop_instance_uid,
                dimse.MOVE_ORIGINATOR_AE: session.ae.title, dimse.MOVE_ORIGINATOR_ID: command.get(dimse.MESSAGE_ID, 0),
            }
            link.send(sub_ctx, store, data)
            status = None
            while status is None:
                rsp_ctx, rsp = link.command()
                if rsp[dimse.COMMAND_FIELD] == dimse.C_CANCEL_RQ:
                    stopped = True
                    continue
                if rsp[dimse.COMMAND_FIELD] != dimse.C_STORE_RSP:
                    link.abort()
                    from expediente.dicom.net.link import Aborted

                    raise Aborted("se esperaba C-STORE-RSP durante C-GET")
                status = rsp.get(dimse.STATUS, 0xC000)
            counts.done(status)
            session.note_study(ref.study_uid)
        if stopped:
            break
        if counts.remaining:
            _pending(session, ctx, command, field, counts)
    session.moved += counts.completed + counts.warning
    _final(session, ctx, command, field, counts, stopped)
