"""FHIR errors as the domain raises them, and their OperationOutcome form (Spanish diagnostics).

Services raise these; the API layer turns them into an HTTP status and an OperationOutcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Issue:
    diagnostics: str
    code: str = "processing"  # FHIR issue-type code
    severity: str = "error"
    expression: str | None = None  # FHIRPath of the offending element

    def to_json(self) -> dict:
        out: dict = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = [self.expression]
        return out


def operation_outcome(issues: list[Issue]) -> dict:
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


@dataclass
class FhirError(Exception):
    status: int
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, status: int, diagnostics: str, code: str = "processing", expression: str | None = None):
        return cls(status, [Issue(diagnostics, code, expression=expression)])

    def __str__(self) -> str:
        return "; ".join(i.diagnostics for i in self.issues)

    def outcome(self) -> dict:
        return operation_outcome(self.issues)


def bad_request(diagnostics: str, code: str = "invalid", expression: str | None = None) -> FhirError:
    return FhirError.of(400, diagnostics, code, expression)


def not_found(res_type: str, res_id: str) -> FhirError:
    # The same words whether it is missing or hidden by the access policy: ids reveal nothing.
    return FhirError.of(404, f"No existe el recurso {res_type}/{res_id} o no tiene acceso a él", "not-found")


def gone(res_type: str, res_id: str, version: int) -> FhirError:
    err = FhirError.of(410, f"El recurso {res_type}/{res_id} fue eliminado (versión {version}); su historial sigue disponible", "deleted")
    err.headers["ETag"] = f'W/"{version}"'
    return err


def unknown_type(res_type: str) -> FhirError:
    return FhirError.of(404, f"Tipo de recurso desconocido o no soportado: '{res_type}'", "not-supported")


def version_conflict(res_type: str, res_id: str, expected: str, current: int) -> FhirError:
    return FhirError.of(
        412,
        f"Conflicto de versión en {res_type}/{res_id}: If-Match pide la versión {expected} y la actual es {current}",
        "conflict",
    )


def concurrent_write(res_type: str, res_id: str) -> FhirError:
    return FhirError.of(409, f"Otro usuario modificó {res_type}/{res_id} al mismo tiempo; vuelva a leerlo e intente de nuevo", "conflict")
