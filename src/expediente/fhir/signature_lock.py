"""Signed clinical documents are immutable (NOM-004: a signed note is corrected by an
amendment, never rewritten). The store calls ``refuse_change_if_signed`` before it writes a
new version or a deletion over a current one.

A signature is a Provenance whose ``signature`` entry is an author's signature in JWS
(written by ``POST [type]/[id]/$sign``). Such a Provenance cannot be changed either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
import sqlalchemy as sa

from expediente.db.schema import idx_reference, resource
from expediente.fhir.errors import FhirError

if TYPE_CHECKING:
    from expediente.fhir.store import Stored

SIGNABLE_TYPES = ("Composition", "DocumentReference")
AUTHOR_SIGNATURE = {"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.1", "display": "Author's Signature"}
JOSE = "application/jose"


def is_signature(signature: dict) -> bool:
    return signature.get("sigFormat") == JOSE and any(
        c.get("system") == AUTHOR_SIGNATURE["system"] and c.get("code") == AUTHOR_SIGNATURE["code"]
        for c in signature.get("type") or ()
        if isinstance(c, dict)
    )


def is_signature_provenance(body: dict) -> bool:
    return body.get("resourceType") == "Provenance" and any(
        isinstance(s, dict) and is_signature(s) for s in body.get("signature") or ()
    )


def refuse_change_if_signed(conn: sa.Connection, current: Stored) -> None:
    """Raise 409 when ``current`` is a signed document or a signature (inside the write's
    transaction, after the store has made earlier writes of the transaction visible)."""
    if current.deleted:
        return
    if current.res_type == "Provenance" and is_signature_provenance(orjson.loads(current.body)):
        raise FhirError.of(
            409,
            f"Provenance/{current.res_id} es una firma electrónica: no se puede modificar ni eliminar",
            "business-rule",
        )
    if current.res_type in SIGNABLE_TYPES and _has_signature(conn, current.res_type, current.res_id):
        raise FhirError.of(
            409,
            f"{current.res_type}/{current.res_id} está firmado electrónicamente y no se puede modificar ni eliminar. "
            f"Para corregirlo registre una enmienda: un nuevo {current.res_type} con relatesTo "
            f"(replaces, appends o transforms) que apunte a {current.res_type}/{current.res_id}, y fírmela",
            "business-rule",
        )


def _has_signature(conn: sa.Connection, res_type: str, res_id: str) -> bool:
    ref = idx_reference.c
    bodies = conn.execute(
        sa.select(resource.c.body)
        .join(idx_reference, sa.and_(resource.c.res_type == ref.res_type, resource.c.res_id == ref.res_id))
        .where(
            ref.res_type == "Provenance",
            ref.param == "target",
            ref.target_type == res_type,
            ref.target_id == res_id,
            resource.c.deleted == sa.false(),
        )
    ).scalars()
    return any(is_signature_provenance(orjson.loads(body)) for body in bodies)
