"""Which Patient a study belongs to, from what its DICOM header says about the person.

Evidence, strongest first: a valid CURP among the patient IDs; a patient ID with an issuer the
record knows (an OID, a URI, CURP/NSS); a patient ID no other record shares; the order
(ServiceRequest) named by the accession number; and last, the master patient index on name,
birth date and sex (only a ``certain`` match). Records of one person linked by the MPI count as
one person. Any contradiction (another birth date or sex, two different people) sends the
study to the reconciliation list: a study is never attached to the wrong record by guessing.
Every lookup goes through the store, so the access policy decides and the audit trail records.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import orjson
import pydicom

from expediente.fhir.store import Caller, ResourceStore
from expediente.mpi.index import find_matches
from expediente.mpi.person import person_records
from expediente.mx.curp import is_valid_curp
from expediente.mx.systems import CURP_SYSTEM, NSS_SYSTEM
from expediente.security.principal import Principal

IMAGING_PRINCIPAL = Principal(subject="imaging", kind="system", role="system")
IMAGING_CALLER = Caller(IMAGING_PRINCIPAL, source="imaging")
_ISSUER_SYSTEMS = {"CURP": CURP_SYSTEM, "RENAPO": CURP_SYSTEM, "NSS": NSS_SYSTEM, "IMSS": NSS_SYSTEM}
_SEX = {"M": "male", "F": "female", "O": "other"}


@dataclass(frozen=True, slots=True)
class PersonInHeader:
    identifiers: tuple[tuple[str, str], ...]  # (PatientID, IssuerOfPatientID), the main one first
    family: str = ""
    given: tuple[str, ...] = ()
    birth_date: str = ""  # FHIR form YYYY-MM-DD
    gender: str = ""
    accession: str = ""


@dataclass
class Decision:
    patient_id: str | None
    reason: str  # Spanish: why attached, or why it waits for a person
    candidates: list[str] = field(default_factory=list)
    service_request: str | None = None


def person_in(header: bytes) -> PersonInHeader:
    """What one instance's header (the file up to Pixel Data) says about the patient."""
    ds = pydicom.dcmread(io.BytesIO(header), stop_before_pixels=True)
    ids = [(str(ds.get("PatientID", "") or "").strip(), str(ds.get("IssuerOfPatientID", "") or "").strip())]
    for item in ds.get("OtherPatientIDsSequence", []) or []:
        ids.append((str(item.get("PatientID", "") or "").strip(), str(item.get("IssuerOfPatientID", "") or "").strip()))
    name = ds.get("PatientName")
    family = str(name.family_name).strip() if name else ""
    given = tuple(str(name.given_name).split()) if name else ()
    birth = str(ds.get("PatientBirthDate", "") or "").strip()
    return PersonInHeader(
        identifiers=tuple((v, i) for v, i in ids if v),
        family=family,
        given=given,
        birth_date=f"{birth[:4]}-{birth[4:6]}-{birth[6:8]}" if len(birth) == 8 and birth.isdigit() else "",
        gender=_SEX.get(str(ds.get("PatientSex", "") or "").strip().upper(), ""),
        accession=str(ds.get("AccessionNumber", "") or "").strip(),
    )


class PatientFinder:
    def __init__(self, store: ResourceStore):
        self.store = store

    def decide(self, person: PersonInHeader) -> Decision:
        order = self._order(person.accession)
        found: dict[str, str] = {}  # patient id -> the evidence
        for value, issuer in person.identifiers:
            for pid in self._by_identifier(value, issuer):
                found.setdefault(pid, f"identificador {value}" + (f" ({issuer})" if issuer else ""))
        if order and order[1]:
            found.setdefault(order[1], f"orden {order[0]} (número de acceso {person.accession})")
        if not found:
            return self._by_demographics(person, order)
        contradicting = [f"{pid}: {why}" for pid in found if (why := self._contradiction(pid, person))]
        if contradicting:
            return Decision(None, "los datos demográficos no coinciden con el expediente: " + "; ".join(contradicting), sorted(found))
        people = self._people(list(found))
        if len(people) > 1:
            return Decision(None, "los identificadores corresponden a personas distintas", sorted(found))
        chosen = next(iter(found))
        return Decision(chosen, "vinculado por " + found[chosen], sorted(found), order[0] if order else None)

    # ------------------------------------------------------------------ evidence

    def _search(self, res_type: str, params: list[tuple[str, str]]) -> list[dict]:
        result = self.store.search(IMAGING_CALLER, res_type, params + [("_count", "20")])
        return [orjson.loads(s.body) for s in result.matches]

    def _by_identifier(self, value: str, issuer: str) -> list[str]:
        if is_valid_curp(value.upper()):
            return [p["id"] for p in self._search("Patient", [("identifier", f"{CURP_SYSTEM}|{value.upper()}")])]
        system = _system_of(issuer)
        if system:
            return [p["id"] for p in self._search("Patient", [("identifier", f"{system}|{value}")])]
        # A bare ID (no issuer the record knows): only when a single record carries it.
        matches = [p["id"] for p in self._search("Patient", [("identifier", value)])]
        return matches if len(matches) == 1 else []

    def _order(self, accession: str) -> tuple[str, str | None] | None:
        if not accession:
            return None
        orders = self._search("ServiceRequest", [("identifier", accession)])
        if len(orders) != 1:
            return None
        ref = (orders[0].get("subject") or {}).get("reference", "")
        return orders[0]["id"], ref.split("/", 1)[1] if ref.startswith("Patient/") else None

    def _by_demographics(self, person: PersonInHeader, order) -> Decision:
        if not (person.family and person.birth_date):
            return Decision(None, "el encabezado DICOM no trae un identificador conocido ni nombre y fecha de nacimiento suficientes")
        pseudo = {"resourceType": "Patient", "name": [{"family": person.family, "given": list(person.given)}], "birthDate": person.birth_date}
        if person.gender:
            pseudo["gender"] = person.gender
        with self.store.reader.connect() as conn:
            matches = find_matches(conn, pseudo, limit=5)
        certain = [m.patient_id for m in matches if m.grade == "certain"]
        if certain and len(self._people(certain)) == 1:
            return Decision(certain[0], "vinculado por el índice maestro de pacientes (coincidencia cierta)", certain, order[0] if order else None)
        if not matches:
            return Decision(None, "ningún expediente coincide con el paciente del estudio")
        return Decision(None, "coincidencias no concluyentes en el índice maestro de pacientes", [m.patient_id for m in matches])

    def _contradiction(self, patient_id: str, person: PersonInHeader) -> str:
        patients = self._search("Patient", [("_id", patient_id)])
        if not patients:
            return ""
        p = patients[0]
        if person.birth_date and p.get("birthDate") and p["birthDate"] != person.birth_date:
            return f"fecha de nacimiento {p['birthDate']} en el expediente, {person.birth_date} en el estudio"
        if person.gender and p.get("gender") in ("male", "female") and person.gender in ("male", "female") and p["gender"] != person.gender:
            return "sexo distinto en el expediente y en el estudio"
        return ""

    def _people(self, patient_ids: list[str]) -> list[frozenset[str]]:
        """Group records into people through the MPI's links."""
        people: list[frozenset[str]] = []
        with self.store.reader.connect() as conn:
            for pid in patient_ids:
                if any(pid in person for person in people):
                    continue
                people.append(frozenset([pid, *person_records(conn, pid)]))
        return people


def _system_of(issuer: str) -> str | None:
    if not issuer:
        return None
    if issuer.upper() in _ISSUER_SYSTEMS:
        return _ISSUER_SYSTEMS[issuer.upper()]
    if issuer.startswith(("urn:", "http://", "https://")):
        return issuer
    if all(part.isdigit() for part in issuer.split(".")) and "." in issuer:
        return f"urn:oid:{issuer}"
    return None


__all__ = ["Decision", "IMAGING_CALLER", "PatientFinder", "PersonInHeader", "person_in"]
