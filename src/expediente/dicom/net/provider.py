"""One association from accept to release: negotiation, the command loop, the audit entry."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field

from expediente.config import Settings
from expediente.db.engine import write_transaction
from expediente.dicom.aes import AeDirectory
from expediente.dicom.archive import Archive, Origin
from expediente.dicom.net import dimse, pdu
from expediente.dicom.net.association import Accepted, Rejection, negotiate
from expediente.dicom.net.link import Aborted, Link, Released
from expediente.security.audit import AuditEntry, AuditWriter

log = logging.getLogger("expediente.dicom.net")
IDLE_TIMEOUT_S = 300.0
MAX_AUDITED_STUDIES = 200


@dataclass
class Session:
    """What the services see of one association."""

    link: Link
    accepted: Accepted
    archive: Archive
    settings: Settings
    aes: AeDirectory
    peer: str
    stored: int = 0
    failed: int = 0
    found: int = 0
    moved: int = 0
    refused: int = 0
    studies: set[str] = field(default_factory=set)

    @property
    def ae(self):
        return self.accepted.ae

    @property
    def origin(self) -> Origin:
        """Who sent what this association stores (recorded with each instance)."""
        return Origin(kind="dimse", calling_ae=self.ae.title, institution=self.ae.institution or None)

    def note_study(self, uid: str) -> None:
        if uid and len(self.studies) < MAX_AUDITED_STUDIES:
            self.studies.add(uid)


class Provider:
    """Serves associations for one receiving process (one archive, one AE directory)."""

    def __init__(self, archive: Archive, settings: Settings, aes: AeDirectory):
        self.archive = archive
        self.settings = settings
        self.aes = aes
        from expediente.dicom.net.services import HANDLERS

        self.handlers = HANDLERS

    def serve(self, sock: socket.socket, address) -> None:
        peer = str(address[0]) if isinstance(address, tuple) else str(address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(IDLE_TIMEOUT_S)
        reader = pdu.Reader(sock, self.settings.dicom_max_pdu)
        try:
            kind, body = reader.read()
            if kind != pdu.ASSOCIATE_RQ:
                sock.sendall(pdu.abort_pdu())
                return
            rq = pdu.decode_associate(body)
        except (pdu.Closed, pdu.PduError, OSError) as exc:
            log.info("dimse: asociación inválida de %s: %s", peer, exc)
            try:
                sock.sendall(pdu.abort_pdu())
            except OSError:
                pass
            return
        outcome = negotiate(rq, ae_title=self.settings.dicom_ae_title, aes=self.aes, max_pdu=self.settings.dicom_max_pdu)
        if isinstance(outcome, Rejection):
            log.info("dimse: asociación rechazada de %s (%s): %s", rq.calling, peer, outcome.why)
            self._audit(rq.calling, peer, "denied", outcome.why)
            sock.sendall(pdu.reject_pdu(outcome.result, outcome.source, outcome.reason))
            return
        sock.sendall(pdu.encode_associate(outcome.ac, accept=True))
        session = Session(Link(sock, reader, outcome.peer_max_pdu), outcome, self.archive, self.settings, self.aes, peer)
        ending, released = "liberada", False
        try:
            self._loop(session)
        except Released:
            released = True
        except Aborted as exc:
            ending = f"abortada ({exc})"[:60]
        except Exception:  # noqa: BLE001 - one association's failure must not end the process
            log.exception("dimse: error en la asociación de %s", rq.calling)
            session.link.abort()
            ending = "abortada (error interno)"
        reason = (
            f"asociación DIMSE {ending}; institución {session.ae.institution or '-'}; almacenadas {session.stored}, "
            f"fallidas {session.failed}, rechazadas {session.refused}, encontradas {session.found}, movidas {session.moved}"
        )
        self._audit(rq.calling, peer, "allowed", reason, tuple(sorted(session.studies)))
        if released:
            try:
                sock.sendall(pdu.RELEASE_RP_PDU)
            except OSError:
                pass

    def _loop(self, session: Session) -> None:
        link = session.link
        while True:
            ctx, command = link.command()
            if ctx not in session.accepted.contexts:
                link.abort()
                raise Aborted(f"contexto de presentación {ctx} no aceptado")
            handler = self.handlers.get(command[dimse.COMMAND_FIELD])
            if handler is None:
                if command.get(dimse.DATASET_TYPE, dimse.NO_DATASET) != dimse.NO_DATASET:
                    for _ in link.fragments(ctx):
                        pass
                if command[dimse.COMMAND_FIELD] == dimse.C_CANCEL_RQ:
                    continue  # a cancel after its operation ended: nothing to cancel
                link.send(ctx, dimse.response(command, command[dimse.COMMAND_FIELD] | 0x8000, 0x0211))  # unrecognized operation
                continue
            handler(session, ctx, command)

    def _audit(self, calling: str, peer: str, outcome: str, reason: str, studies: tuple[str, ...] = ()) -> None:
        entry = AuditEntry(
            actor=f"dicom:{calling.strip()}"[:128],
            role="system",
            action="dimse",
            res_type="ImagingStudy",
            res_id=None,
            patient_key=None,
            outcome=outcome,
            reason=reason[:255],
            source=peer[:64],
            entities=tuple(f"ImagingStudy/{uid}" for uid in studies),
        )
        try:
            with write_transaction(self.archive.engine) as conn:
                AuditWriter.record_in(conn, [entry])
        except Exception:  # noqa: BLE001 - logged loudly: the association already ended
            log.exception("dimse: no se pudo registrar la asociación de %s en la bitácora", calling)
