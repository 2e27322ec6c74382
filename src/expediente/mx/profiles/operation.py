"""$validate: a resource checked for structure and against the Mexican profiles, as an
OperationOutcome (the answer is 200 whatever it finds; nothing is stored)."""

from __future__ import annotations

from expediente.fhir import errors
from expediente.fhir.errors import Issue, operation_outcome
from expediente.fhir.validation import collect_issues
from expediente.mx.profiles import BY_URL, Profile, profile_issues


def resource_and_profile(body: object, res_type: str, profile_url: str | None) -> tuple[dict, Profile | None]:
    """The resource to validate (the body, or a Parameters' ``resource``) and the profile asked
    for (``?profile=`` or the Parameters' ``profile``); 400 when neither makes sense."""
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        params = [p for p in body.get("parameter") or () if isinstance(p, dict)]
        resource = next((p.get("resource") for p in params if p.get("name") == "resource"), None)
        named = next((p for p in params if p.get("name") == "profile"), {})
        profile_url = profile_url or named.get("valueUri") or named.get("valueCanonical")
        body = resource
    if not isinstance(body, dict):
        raise errors.bad_request("$validate espera el recurso (o Parameters con el parámetro 'resource')", expression="resource")
    profile = None
    if profile_url:
        profile = BY_URL.get(profile_url.split("|", 1)[0])
        if profile is None:
            raise errors.bad_request(f"Perfil desconocido: '{profile_url[:200]}'", "not-supported", "profile")
        if profile.type != res_type:
            raise errors.bad_request(f"El perfil '{profile_url}' es para {profile.type}, no para {res_type}", expression="profile")
    return body, profile


def validate(resource: dict, res_type: str, mode: str, profile: Profile | None = None) -> dict:
    """The OperationOutcome of $validate for ``resource`` (expected of type ``res_type``)."""
    issues: list[Issue] = []
    if resource.get("resourceType") != res_type:
        issues.append(Issue(f"El resourceType del recurso ('{resource.get('resourceType')}') no es {res_type}", "invalid", expression="resourceType"))
    found = collect_issues(resource)
    issues += [Issue(i.message, i.code, expression=i.path or None) for i in found]
    if not issues:
        issues += [Issue(i.message, i.code, expression=i.path) for i in profile_issues(resource, mode, profile)]
    if not issues:
        issues.append(Issue("El recurso es válido", "informational", "information"))
        if res_type == "Composition" and resource.get("status") in ("final", "amended"):
            issues.append(Issue(
                "Composition: un documento final se firma con la operación $sign después de guardarlo (NOM-004 5.10)",
                "informational", "information", "Composition",
            ))
    return operation_outcome(issues)
