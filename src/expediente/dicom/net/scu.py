"""Our side as requestor: the sub-associations of C-MOVE (C-STOREs to a destination AE), and a
plain client for tests and tools. Data sets are sent exactly as stored."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from expediente.dicom.net import dimse, pdu
from expediente.dicom.net.association import IMPLEMENTATION_UID, IMPLEMENTATION_VERSION
from expediente.dicom.net.link import Link


class AssociationRefused(Exception):
    def __init__(self, kind: int, detail: bytes = b""):
        super().__init__(f"asociación no aceptada (PDU {kind}, {detail.hex()})")
        self.kind = kind
        self.detail = detail


@dataclass
class Requestor:
    link: Link
    contexts: dict[int, tuple[str, str]]  # accepted: id -> (abstract syntax, transfer syntax)
    _message_id: int = 0

    @classmethod
    def open(cls, host: str, port: int, *, calling: str, called: str, proposals: list[tuple[str, list[str]]], max_pdu: int = 1 << 20, timeout: float = 60.0) -> Requestor:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rq = pdu.AssociateRq(called=called, calling=calling, max_pdu=max_pdu, implementation_uid=IMPLEMENTATION_UID, implementation_version=IMPLEMENTATION_VERSION)
        rq.contexts = [pdu.Context(2 * i + 1, abstract, list(syntaxes)) for i, (abstract, syntaxes) in enumerate(proposals)]
        sock.sendall(pdu.encode_associate(rq, accept=False))
        reader = pdu.Reader(sock, max_pdu)
        try:
            kind, body = reader.read()
        except BaseException:
            sock.close()
            raise
        if kind != pdu.ASSOCIATE_AC:
            sock.close()
            raise AssociationRefused(kind, bytes(body))
        ac = pdu.decode_associate(body)
        abstract_of = {c.id: c.abstract_syntax for c in rq.contexts}
        contexts = {c.id: (abstract_of.get(c.id, ""), c.transfer_syntaxes[0]) for c in ac.contexts if c.result == 0 and c.transfer_syntaxes}
        return cls(Link(sock, reader, ac.max_pdu), contexts)

    def context_for(self, sop_class: str, transfer_syntax: str | None = None) -> int | None:
        for ctx, (abstract, ts) in self.contexts.items():
            if abstract == sop_class and (transfer_syntax is None or ts == transfer_syntax):
                return ctx
        return None

    def _next_id(self) -> int:
        self._message_id = self._message_id % 65535 + 1
        return self._message_id

    def echo(self) -> int:
        ctx = self.context_for("1.2.840.10008.1.1")
        self.link.send(ctx, {dimse.COMMAND_FIELD: dimse.C_ECHO_RQ, dimse.MESSAGE_ID: self._next_id(), dimse.DATASET_TYPE: dimse.NO_DATASET, dimse.AFFECTED_SOP_CLASS: "1.2.840.10008.1.1"})
        _, rsp = self.link.command()
        return rsp[dimse.STATUS]

    def store(self, ctx: int, sop_class: str, sop_uid: str, dataset: bytes | memoryview, *, originator: tuple[str, int] | None = None) -> dict:
        """Send one C-STORE; the response command set."""
        command = {
            dimse.COMMAND_FIELD: dimse.C_STORE_RQ,
            dimse.MESSAGE_ID: self._next_id(),
            dimse.PRIORITY: 0,
            dimse.DATASET_TYPE: dimse.HAS_DATASET,
            dimse.AFFECTED_SOP_CLASS: sop_class,
            dimse.AFFECTED_SOP_INSTANCE: sop_uid,
        }
        if originator:
            command[dimse.MOVE_ORIGINATOR_AE], command[dimse.MOVE_ORIGINATOR_ID] = originator
        self.link.send(ctx, command, dataset)
        _, rsp = self.link.command()
        if rsp.get(dimse.DATASET_TYPE, dimse.NO_DATASET) != dimse.NO_DATASET:
            self.link.dataset(ctx)
        return rsp

    def release(self) -> None:
        try:
            self.link.release()
        finally:
            self.link.sock.close()
