"""Association negotiation (PS3.8 section 7.1, PS3.7 Annex D): which calling AEs, abstract
syntaxes, transfer syntaxes and roles this archive accepts."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.uid import UID_dictionary
from pynetdicom.sop_class import _QR_CLASSES, _STORAGE_CLASSES

from expediente.dicom.aes import AeDirectory, KnownAE
from expediente.dicom.net.pdu import APPLICATION_CONTEXT, AssociateRq, Context, Role

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.1089.1.1"
IMPLEMENTATION_VERSION = "EXPEDIENTE_01"

STORAGE = frozenset(_STORAGE_CLASSES.values())
_QR = {
    "find": {_QR_CLASSES[k] for k in ("PatientRootQueryRetrieveInformationModelFind", "StudyRootQueryRetrieveInformationModelFind")},
    "move": {_QR_CLASSES[k] for k in ("PatientRootQueryRetrieveInformationModelMove", "StudyRootQueryRetrieveInformationModelMove")},
    "get": {_QR_CLASSES[k] for k in ("PatientRootQueryRetrieveInformationModelGet", "StudyRootQueryRetrieveInformationModelGet")},
}
PATIENT_ROOT = {_QR_CLASSES[f"PatientRootQueryRetrieveInformationModel{s}"] for s in ("Find", "Move", "Get")}
SERVICE_OF = {uid: service for service, uids in _QR.items() for uid in uids} | {VERIFICATION: "echo"}
# Storage data sets are kept as received, so any transfer syntax the registry knows is fine;
# identifiers and responses are decoded by pydicom: uncompressed syntaxes only.
_STORAGE_SYNTAXES = frozenset(uid for uid, entry in UID_dictionary.items() if entry[1] == "Transfer Syntax")
_PLAIN_SYNTAXES = (EXPLICIT_LE, IMPLICIT_LE)

# A-ASSOCIATE-RJ (PS3.8 9.3.4): result 1 permanent; source 1 service user, 2 provider (ACSE)
REJECT_PERMANENT = 1
SOURCE_USER = 1
SOURCE_ACSE = 2
REASON_NO_REASON = 1
REASON_APP_CONTEXT = 2
REASON_CALLING_AE = 3
REASON_CALLED_AE = 7
REASON_PROTOCOL_VERSION = 2  # with source 2 (ACSE)


@dataclass(frozen=True)
class Rejection:
    result: int
    source: int
    reason: int
    why: str


@dataclass
class Accepted:
    ae: KnownAE
    ac: AssociateRq
    contexts: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> (abstract, transfer syntax)
    peer_max_pdu: int = 0
    # SOP classes for which the requestor takes the SCP role (C-GET's C-STORE sub-operations)
    scp_role: set[str] = field(default_factory=set)

    def context_for(self, sop_class: str, transfer_syntax: str | None = None) -> int | None:
        for ctx_id, (abstract, ts) in self.contexts.items():
            if abstract == sop_class and (transfer_syntax is None or ts == transfer_syntax):
                return ctx_id
        return None


def negotiate(rq: AssociateRq, *, ae_title: str, aes: AeDirectory, max_pdu: int) -> Accepted | Rejection:
    if rq.application_context != APPLICATION_CONTEXT:
        return Rejection(REJECT_PERMANENT, SOURCE_USER, REASON_APP_CONTEXT, "contexto de aplicación no soportado")
    if rq.called.strip() != ae_title.strip():
        return Rejection(REJECT_PERMANENT, SOURCE_USER, REASON_CALLED_AE, f"AE llamado desconocido: {rq.called!r}")
    ae = aes.get(rq.calling)
    if ae is None:
        return Rejection(REJECT_PERMANENT, SOURCE_USER, REASON_CALLING_AE, f"AE llamante no registrado: {rq.calling!r}")
    proposed_roles = {r.sop_class: r for r in rq.roles}
    ac = AssociateRq(called=rq.called, calling=rq.calling, max_pdu=max_pdu, implementation_uid=IMPLEMENTATION_UID, implementation_version=IMPLEMENTATION_VERSION)
    accepted = Accepted(ae=ae, ac=ac, peer_max_pdu=rq.max_pdu)
    for ctx in rq.contexts:
        abstract = ctx.abstract_syntax
        if abstract in STORAGE:
            choices = [ts for ts in ctx.transfer_syntaxes if ts in _STORAGE_SYNTAXES]
        elif abstract in SERVICE_OF:
            choices = [ts for ts in _PLAIN_SYNTAXES if ts in ctx.transfer_syntaxes]
        else:
            ac.contexts.append(Context(ctx.id, abstract, [], result=3))
            continue
        if not choices:
            ac.contexts.append(Context(ctx.id, abstract, [], result=4))
            continue
        ac.contexts.append(Context(ctx.id, abstract, [choices[0]], result=0))
        accepted.contexts[ctx.id] = (abstract, choices[0])
    for sop_class, role in proposed_roles.items():
        if sop_class in STORAGE and any(a == sop_class for a, _ in accepted.contexts.values()):
            # We accept the roles as proposed: with scp=1 the requestor receives C-STOREs (C-GET).
            ac.roles.append(Role(sop_class, role.scu, role.scp))
            if role.scp:
                accepted.scp_role.add(sop_class)
    return accepted
