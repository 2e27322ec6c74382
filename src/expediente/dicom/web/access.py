"""Who may see which studies over DICOMweb: the same access policy and audit trail as FHIR.

A study is patient data of type ImagingStudy, in the compartment of the Patient it was
reconciled with (``dicom_study.patient_key``). The policy's row rule becomes the archive's
``Scope``; a study not yet reconciled with a patient is visible only to callers whose rule is
unrestricted (the institution's systems), never to a clinician by chance.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from starlette.requests import Request

from expediente.api_common import caller_of
from expediente.dicom.archive import Scope
from expediente.security.access import Access, Grant

RES_TYPE = "ImagingStudy"


def imaging_grant(request: Request, action: str) -> tuple[Grant, Scope]:
    """The caller's type-level decision for ``action`` (read | search) on imaging, and the
    scope of studies they may see. A denial is audited and raised (403)."""
    caller = caller_of(request)
    gate = request.app.state.services.gate
    grant = gate.grant(caller.principal, action, RES_TYPE, source=caller.source, emergency=caller.emergency_reason)
    if grant.rule.unrestricted:
        return grant, Scope()

    def visible(study: sa.Table) -> sa.ColumnElement[bool]:
        cond = grant.visible(sa.literal(RES_TYPE), sa.func.coalesce(study.c.imaging_study_id, ""), study.c.patient_key)
        return sa.and_(study.c.patient_key.is_not(None), cond) if cond is not None else study.c.patient_key.is_not(None)

    return grant, Scope(condition=visible)


def record_access_pending(request: Request, grant: Grant, action: str, study: str, patient_key: str | None, *, found: bool) -> Callable[[], None]:
    """``record_access`` for one study, split: the entry is queued now and the function
    returned waits for it (raising 503, or 404 when the study is not visible)."""
    caller = caller_of(request)
    return request.app.state.services.gate.record_pending(
        grant, Access(action, RES_TYPE, study, patient_key, found), source=caller.source, entities=(f"{RES_TYPE}/{study}",)
    )


def record_access(request: Request, grant: Grant, action: str, studies: list[tuple[str, str | None]], *, found: bool = True) -> None:
    """Audit what a request returned: ``studies`` as (study UID, patient key). A read of one
    study that is not visible (``found`` False) is recorded and answered 404 by the gate."""
    caller = caller_of(request)
    gate = request.app.state.services.gate
    entities = tuple(f"{RES_TYPE}/{uid}" for uid, _ in studies)
    if len(studies) == 1:
        uid, patient_key = studies[0]
        gate.record(grant, Access(action, RES_TYPE, uid, patient_key, found), source=caller.source, entities=entities)
    else:
        gate.record(grant, Access(action, RES_TYPE), source=caller.source, entities=entities)
