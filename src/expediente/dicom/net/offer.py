"""What a C-STORE sub-operation (C-MOVE, C-GET) sends: the stored bytes wherever the peer
accepted their transfer syntax; otherwise a lossless conversion to a syntax it did accept, so
an older workstation that takes only uncompressed images still receives a JPEG 2000 study
(``dicom/transcode.py``; the SOP Instance UID is kept). Nothing is converted that need not be."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from expediente.dicom import transcode
from expediente.dicom.archive import InstanceRef
from expediente.dicom.net.identifier import dataset_of

log = logging.getLogger("expediente.dicom.net")

MAX_CONTEXTS = 128  # presentation context ids are odd numbers 1-255
NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
# Conversions in order of preference: uncompressed first (every peer decodes it), then lossless.
_CONVERSIONS = (*NATIVE, *sorted(transcode.COMPRESSED_TARGETS))


class NotSendable(Exception):
    """An instance that cannot go to this peer: no accepted syntax, or the conversion failed."""


def proposals(refs: Iterable[InstanceRef]) -> list[tuple[str, list[str]]]:
    """Presentation contexts for a sub-association: each stored (SOP class, syntax) pair, then
    one context a SOP class offering the uncompressed syntaxes to convert to."""
    stored = sorted({(r.sop_class_uid, r.transfer_syntax) for r in refs})
    contexts = [(sop_class, [syntax]) for sop_class, syntax in stored]
    contexts += [(sop_class, list(NATIVE)) for sop_class in sorted({c for c, _ in stored})]
    return contexts[:MAX_CONTEXTS]


def choose(context_for: Callable[[str, str], int | None], ref: InstanceRef) -> tuple[int, str]:
    """(presentation context id, transfer syntax) to send ``ref`` with: its own syntax where
    accepted, else the first accepted syntax it can be converted to."""
    ctx = context_for(ref.sop_class_uid, ref.transfer_syntax)
    if ctx is not None:
        return ctx, ref.transfer_syntax
    for syntax in _CONVERSIONS:
        ctx = context_for(ref.sop_class_uid, syntax)
        if ctx is not None and transcode.can_transcode(ref.transfer_syntax, syntax):
            return ctx, syntax
    raise NotSendable(f"el destino no aceptó {ref.sop_class_uid} en {ref.transfer_syntax} ni en una sintaxis a la que se pueda convertir")


def payload(part10: bytes, ref: InstanceRef, syntax: str):
    """The data set to send in ``syntax`` (a view of the stored file when it is its own)."""
    if syntax != ref.transfer_syntax:
        try:
            part10 = transcode.transcode(part10, syntax)
        except transcode.TranscodeError as exc:
            log.info("dimse: %s no se convirtió a %s: %s", ref.sop_instance_uid, syntax, exc.reason)
            raise NotSendable(exc.reason) from None
    return dataset_of(part10)
