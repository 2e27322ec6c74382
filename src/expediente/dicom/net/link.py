"""DIMSE messages over an established association: commands in, data set fragments streamed,
commands and data sets out (fragmented to the peer's maximum PDU, sent without copies)."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

from expediente.dicom.net import dimse, pdu


class Released(Exception):
    """The peer asked to release the association (A-RELEASE-RP still to be sent)."""


class Aborted(Exception):
    """The peer aborted, closed the connection, or broke the protocol."""


class Link:
    def __init__(self, sock: socket.socket, reader: pdu.Reader, peer_max_pdu: int):
        self.sock = sock
        self.reader = reader
        # Largest PDV data we send: the peer's maximum PDU less the PDU and PDV headers.
        self.fragment = (peer_max_pdu - 12) if peer_max_pdu >= 1024 else 1 << 20
        self._pdvs: list = []  # the PDVs of the current P-DATA PDU not yet handed out
        self._next = 0

    # ------------------------------------------------------------------ receiving

    def _next_pdv(self) -> tuple[int, bool, bool, memoryview]:
        while True:
            if self._next < len(self._pdvs):
                self._next += 1
                return self._pdvs[self._next - 1]
            try:
                kind, body = self.reader.read()
            except (pdu.Closed, OSError) as exc:
                raise Aborted(str(exc) or "conexión cerrada") from None
            except pdu.PduError as exc:
                self.abort()
                raise Aborted(str(exc)) from None
            if kind == pdu.P_DATA:
                self._pdvs, self._next = list(pdu.pdvs(body)), 0
            elif kind == pdu.RELEASE_RQ:
                raise Released()  # answered by the provider once the association is audited
            elif kind == pdu.ABORT:
                raise Aborted("A-ABORT del par")
            else:
                self.abort()
                raise Aborted(f"PDU inesperado tipo {kind}")

    def _pdv(self):
        try:
            return self._next_pdv()
        except pdu.PduError as exc:
            self.abort()
            raise Aborted(str(exc)) from None

    def command(self) -> tuple[int, dict]:
        """The next command: (presentation context id, command set)."""
        ctx, is_command, last, data = self._pdv()
        if not is_command:
            self.abort()
            raise Aborted("se esperaba un comando DIMSE")
        if last:
            raw: bytes | memoryview = data
        else:
            parts = bytearray(data)
            while not last:
                ctx2, is_command, last, data = self._pdv()
                if not is_command or ctx2 != ctx:
                    self.abort()
                    raise Aborted("fragmento de comando inválido")
                parts += data
            raw = parts
        try:
            return ctx, dimse.decode(raw)
        except dimse.DimseError as exc:
            self.abort()
            raise Aborted(str(exc)) from None

    def fragments(self, ctx: int) -> Iterator[memoryview]:
        """The data set that follows a command, fragment by fragment (views of the buffer)."""
        while True:
            ctx2, is_command, last, data = self._pdv()
            if is_command or ctx2 != ctx:
                self.abort()
                raise Aborted("se esperaba el conjunto de datos del comando")
            yield data
            if last:
                return

    def dataset(self, ctx: int) -> bytes:
        return b"".join(bytes(f) for f in self.fragments(ctx))

    def readable(self) -> bool:
        """True when something from the peer waits (a C-CANCEL, a response)."""
        if self._next < len(self._pdvs) or self.reader.pending():
            return True
        ready, _, _ = select.select([self.sock], [], [], 0)
        return bool(ready)

    # ------------------------------------------------------------------ sending

    def send(self, ctx: int, command: dict, dataset: bytes | memoryview | None = None) -> None:
        raw = dimse.encode(command)
        chunks: list[bytes | memoryview] = []
        for start in range(0, len(raw), self.fragment):
            part = raw[start : start + self.fragment]
            chunks.append(pdu.p_data(ctx, True, start + self.fragment >= len(raw), part))
        if dataset is not None:
            view = memoryview(dataset)
            total = len(view)
            for start in range(0, max(total, 1), self.fragment):
                part = view[start : start + self.fragment]
                chunks.append(pdu.p_data_head(ctx, False, start + self.fragment >= total, len(part)))
                chunks.append(part)
        self._sendmsg(chunks)

    def _sendmsg(self, chunks: list) -> None:
        while chunks:
            sent = self.sock.sendmsg(chunks[:512])
            while chunks and sent >= len(chunks[0]):
                sent -= len(chunks[0])
                chunks.pop(0)
            if sent and chunks:
                chunks[0] = memoryview(chunks[0])[sent:]

    def abort(self) -> None:
        try:
            self.sock.sendall(pdu.abort_pdu())
        except OSError:
            pass

    def release(self) -> None:
        """Release an association we requested (sub-associations)."""
        self.sock.sendall(pdu.RELEASE_RQ_PDU)
        while True:
            try:
                kind, _ = self.reader.read()
            except (pdu.Closed, pdu.PduError, OSError):
                return
            if kind in (pdu.RELEASE_RP, pdu.ABORT):
                return
