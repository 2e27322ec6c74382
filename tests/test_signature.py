"""Advanced electronic signature (FEA) of clinical documents, end to end on SQLite and PostgreSQL:
sign with an X.509 certificate (RSA and EC, as the SAT's e.firma), verify through the API and
the CLI, refuse tampering, changes to signed documents, bad certificates and bad input."""

from __future__ import annotations

import base64
import struct
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from expediente.db.schema import resource, resource_history
from expediente.mx.nom004 import BY_CODE, section_narrative
from expediente.security import signature as fea
from tests.mx_examples import mx_patient

CURP_SYSTEM = "urn:oid:2.16.840.1.113883.4.629"
CURP = "GOLM800101MDFRPR04"
RFC = "GOLM800101AB1"
NOW = datetime.now(UTC)


# ------------------------------------------------------------------ certificates


def _name(cn: str, rfc: str | None = None, curp: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.COUNTRY_NAME, "MX")]
    if rfc:
        attrs.append(x509.NameAttribute(NameOID.X500_UNIQUE_IDENTIFIER, rfc))
    if curp:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, curp))
    return x509.Name(attrs)


def _certificate(subject, key, issuer_name, issuer_key, *, ca=False, days=(-30, 365), usage=True):
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + timedelta(days=days[0]))
        .not_valid_after(NOW + timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=not ca,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    return builder.sign(issuer_key, hashes.SHA256())


class Authority:
    def __init__(self, cn: str):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(cn)
        self.cert = _certificate(self.name, self.key, self.name, self.key, ca=True, days=(-3650, 3650))

    def issue(self, key, *, rfc=RFC, curp=CURP, **kw) -> x509.Certificate:
        return _certificate(_name("MARIA GONZALEZ LOPEZ", rfc, curp), key, self.name, self.key, **kw)

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def ca() -> Authority:
    return Authority("AC de prueba del SAT")


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


# ------------------------------------------------------------------ documents


@pytest.fixture
def clinic(client, make_token):
    """A patient, a physician (Practitioner with CURP and RFC) who cares for them (an
    encounter names her), and her bearer token. The hospital's system client registers them."""
    admin = {"Authorization": f"Bearer {make_token('system')}"}
    patient = client.post("/fhir/Patient", json=mx_patient(first="Pérez", second=None), headers=admin).json()
    practitioner = {
        "resourceType": "Practitioner",
        "identifier": [
            {"system": CURP_SYSTEM, "value": CURP},
            {"system": "urn:mx:sat:rfc", "value": RFC},
            {"system": "urn:oid:2.16.840.1.113883.3.215.12.18", "value": "7654321"},
        ],
        "name": [{"family": "González López", "given": ["María"]}],
    }
    prac = client.post("/fhir/Practitioner", json=practitioner, headers=admin).json()
    encounter = {
        "resourceType": "Encounter",
        "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient['id']}"},
        "participant": [{"individual": {"reference": f"Practitioner/{prac['id']}"}}],
        "period": {"start": "2026-12-01T09:30:00Z"},
    }
    r = client.post("/fhir/Encounter", json=encounter, headers=admin)
    assert r.status_code == 201, r.text
    token = make_token("physician", practitioner_ref=f"Practitioner/{prac['id']}")
    return {"patient": patient["id"], "practitioner": prac["id"], "encounter": r.json()["id"], "auth": {"Authorization": f"Bearer {token}"}, "admin": admin}


def note(clinic, text="Dolor torácico atípico; se descarta síndrome coronario agudo.", **extra) -> dict:
    return {
        "resourceType": "Composition",
        "status": "final",
        "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3", "display": "Nota de evolución"}]},
        "subject": {"reference": f"Patient/{clinic['patient']}"},
        "date": "2026-12-01T10:00:00Z",
        "author": [{"reference": f"Practitioner/{clinic['practitioner']}"}],
        "title": "Nota de evolución",
        "encounter": {"reference": f"Encounter/{clinic['encounter']}"},
        # NOM-004 6.2: the evolution first, then the other sections of a nota de evolución.
        "section": [
            section_narrative(s, f'<div xmlns="http://www.w3.org/1999/xhtml">{text if s.code == "evolucion" else s.display}</div>')
            for s in BY_CODE["nota-evolucion"].sections
        ],
        **extra,
    }


def create(client, clinic, body) -> dict:
    r = client.post(f"/fhir/{body['resourceType']}", json=body, headers=clinic["auth"])
    assert r.status_code == 201, r.text
    return r.json()


def submit(client, clinic, res_type, res_id, jws, version=None, headers=None):
    params = [{"name": "jws", "valueString": jws}]
    if version is not None:
        params.append({"name": "version", "valueString": str(version)})
    return client.post(
        f"/fhir/{res_type}/{res_id}/$sign", json={"resourceType": "Parameters", "parameter": params}, headers=headers or clinic["auth"]
    )


def sign_current(client, clinic, res_type, res_id, key, chain, **kw):
    current = client.get(f"/fhir/{res_type}/{res_id}", headers=clinic["auth"]).content
    return submit(client, clinic, res_type, res_id, fea.sign_document(current, key, chain, **kw))


def verification(client, clinic, res_type, res_id) -> tuple[bool, list[dict]]:
    r = client.get(f"/fhir/{res_type}/{res_id}/$verify-signature", headers=clinic["auth"])
    assert r.status_code == 200, r.text
    params = r.json()["parameter"]
    overall = next(p["valueBoolean"] for p in params if p["name"] == "valid")
    sigs = [{q["name"]: next(v for k, v in q.items() if k.startswith("value")) for q in p["part"]} for p in params if p["name"] == "signature"]
    return overall, sigs


def counts(services) -> tuple[int, int]:
    with services.engine.connect() as conn:
        return (
            conn.execute(sa.select(sa.func.count()).select_from(resource)).scalar_one(),
            conn.execute(sa.select(sa.func.count()).select_from(resource_history)).scalar_one(),
        )


# ------------------------------------------------------------------ canonical form


def test_canonical_form_is_rfc8785():
    # RFC 8785 §3.2.2 and Appendix B: number formatting, escaping, key order by UTF-16 units.
    source = b'{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001],"string":"\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/","literals":[null,true,false]}'
    expected = '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    assert fea.canonical_json(orjson.loads(source)).decode() == expected
    keys = {"\u20ac": 1, "\r": 2, "\ufb33": 3, "1": 4, "\U0001f600": 5, "\u0080": 6, "\u00f6": 7}
    assert list(orjson.loads(fea.canonical_json(keys))) == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    for bits, text in [
        ("0000000000000001", "5e-324"),
        ("7fefffffffffffff", "1.7976931348623157e+308"),
        ("4340000000000000", "9007199254740992"),
        ("4430000000000000", "295147905179352830000"),
        ("44b52d02c7e14af5", "9.999999999999997e+22"),
        ("444b1ae4d6e2ef50", "1e+21"),
        ("3eb0c6f7a0b5ed8d", "0.000001"),
        ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
        ("8000000000000000", "0"),
    ]:
        assert fea.canonical_json(struct.unpack(">d", bytes.fromhex(bits))[0]).decode() == text


def test_detached_jws_profile(ca, rsa_key, ec_key):
    doc = {"resourceType": "Composition", "id": "n1", "meta": {"versionId": "1"}, "title": "Nota"}
    for key, alg in ((rsa_key, "RS256"), (rsa_key, "PS256"), (ec_key, "ES256")):
        jws = fea.sign_document(doc, key, [ca.issue(key), ca.cert], algorithm=alg if alg == "PS256" else None)
        head, payload, _ = jws.split(".")
        assert payload == ""  # RFC 7515 Appendix F
        header = orjson.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
        assert header["alg"] == alg and header["typ"] == "JOSE" and len(header["x5c"]) == 2 and header["sigT"].endswith("Z")
        parsed = fea.parse_jws(jws)
        assert parsed.matches(fea.canonical_document(doc))
        assert not parsed.matches(fea.canonical_document({**doc, "meta": {"versionId": "2"}}))  # the version is covered
        assert parsed.signer.rfc == RFC and parsed.signer.curp == CURP


def test_sat_key_files_der_and_encrypted_pkcs8(ca, rsa_key, tmp_path):
    cer = ca.issue(rsa_key).public_bytes(serialization.Encoding.DER)
    key = rsa_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"clave-efirma")
    )
    assert fea.load_certificates(cer)[0].subject.get_attributes_for_oid(NameOID.X500_UNIQUE_IDENTIFIER)[0].value == RFC
    assert fea.load_private_key(key, b"clave-efirma").key_size == 2048
    with pytest.raises(fea.SignatureError, match="contraseña"):
        fea.load_private_key(key, b"otra")
    with pytest.raises(fea.SignatureError, match="certificado X.509"):
        fea.load_certificates(b"no es un certificado")


# ------------------------------------------------------------------ sign and verify through the API


def test_signed_note_verifies_rsa_and_ec(client, clinic, ca, rsa_key, ec_key):
    doc = create(client, clinic, note(clinic))
    r = sign_current(client, clinic, "Composition", doc["id"], rsa_key, [ca.issue(rsa_key), ca.cert])
    assert r.status_code == 201, r.text
    prov = r.json()
    assert prov["resourceType"] == "Provenance" and r.headers["location"].endswith(f"/Provenance/{prov['id']}/_history/1")
    assert prov["target"] == [{"reference": f"Composition/{doc['id']}/_history/1"}]
    assert prov["agent"][0]["who"]["reference"] == f"Practitioner/{clinic['practitioner']}"
    sig = prov["signature"][0]
    assert sig["type"][0]["code"] == "1.2.840.10065.1.12.1.1" and sig["type"][0]["system"] == "urn:iso-astm:E1762-95:2013"
    assert sig["sigFormat"] == "application/jose" and sig["targetFormat"] == "application/fhir+json"
    assert base64.b64decode(sig["data"]).decode().count(".") == 2
    # A second, EC P-256 signature (co-signing) on the same version.
    assert sign_current(client, clinic, "Composition", doc["id"], ec_key, [ca.issue(ec_key)]).status_code == 201

    valid, sigs = verification(client, clinic, "Composition", doc["id"])
    assert valid is True and len(sigs) == 2
    assert all(s["valid"] and s["rfc"] == RFC and s["curp"] == CURP and "MARIA GONZALEZ LOPEZ" in s["signer"] for s in sigs)
    assert {s["target"]["reference"] for s in sigs} == {f"Composition/{doc['id']}/_history/1"}
    r = client.get(f"/fhir/Provenance/{prov['id']}/$verify", headers=clinic["auth"])
    assert r.status_code == 200 and r.json()["parameter"][0] == {"name": "valid", "valueBoolean": True}


def test_document_reference_can_be_signed(client, clinic, ca, ec_key):
    doc = create(
        client,
        clinic,
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "subject": {"reference": f"Patient/{clinic['patient']}"},
            "content": [{"attachment": {"contentType": "application/pdf", "url": "Binary/receta-1", "title": "Receta"}}],
        },
    )
    assert sign_current(client, clinic, "DocumentReference", doc["id"], ec_key, [ca.issue(ec_key)]).status_code == 201
    assert verification(client, clinic, "DocumentReference", doc["id"])[0] is True


def test_unsigned_document_does_not_verify(client, clinic):
    doc = create(client, clinic, note(clinic))
    r = client.get(f"/fhir/Composition/{doc['id']}/$verify-signature", headers=clinic["auth"])
    assert r.status_code == 200
    assert r.json()["parameter"] == [
        {"name": "valid", "valueBoolean": False},
        {"name": "reason", "valueString": "El documento no tiene firmas electrónicas"},
    ]


def _tamper(services, table, res_id: str, old: bytes, new: bytes) -> None:
    with services.engine.begin() as conn:
        for body, version in conn.execute(sa.select(table.c.body, table.c.version_id).where(table.c.res_id == res_id)).all():
            assert old in body
            conn.execute(
                table.update().where(table.c.res_id == res_id, table.c.version_id == version).values(body=body.replace(old, new))
            )


def test_tampered_document_fails_verification(client, clinic, services, ca, rsa_key):
    doc = create(client, clinic, note(clinic))
    assert sign_current(client, clinic, "Composition", doc["id"], rsa_key, [ca.issue(rsa_key)]).status_code == 201
    for table in (resource, resource_history):
        _tamper(services, table, doc["id"], b"descarta", b"descartA")  # one byte of the stored note
    valid, [sig] = verification(client, clinic, "Composition", doc["id"])
    assert valid is False and sig["valid"] is False and sig["code"] == "document-changed"
    assert "modificado después de firmarse" in sig["reason"]


def test_tampered_signature_fails_verification(client, clinic, services, ca, rsa_key):
    doc = create(client, clinic, note(clinic))
    prov = sign_current(client, clinic, "Composition", doc["id"], rsa_key, [ca.issue(rsa_key)]).json()
    data = prov["signature"][0]["data"]
    jws = base64.b64decode(data).decode()
    head, _, sig = jws.split(".")
    altered = f"{head}..{sig[:10]}{'A' if sig[10] != 'A' else 'B'}{sig[11:]}"
    _tamper(services, resource, prov["id"], data.encode(), base64.b64encode(altered.encode()))
    _tamper(services, resource_history, prov["id"], data.encode(), base64.b64encode(altered.encode()))
    valid, [check] = verification(client, clinic, "Composition", doc["id"])
    assert valid is False and check["code"] == "signature-mismatch" and "firma fue alterada" in check["reason"]


def test_signature_over_other_content_or_altered_is_refused(client, clinic, ca, rsa_key, services):
    doc = create(client, clinic, note(clinic))
    chain = [ca.issue(rsa_key)]
    other = fea.sign_document({**doc, "title": "Otra nota"}, rsa_key, chain)
    r = submit(client, clinic, "Composition", doc["id"], other)
    assert r.status_code == 422 and "no corresponde a la versión 1" in r.json()["issue"][0]["diagnostics"]
    good = fea.sign_document(doc, rsa_key, chain)
    head, _, sig = good.split(".")
    flipped = f"{head}..{sig[:-3]}{'A' if sig[-3] != 'A' else 'B'}{sig[-2:]}"
    before = counts(services)
    assert submit(client, clinic, "Composition", doc["id"], flipped).status_code == 422
    assert counts(services) == before  # nothing stored
    assert verification(client, clinic, "Composition", doc["id"])[0] is False


def test_signed_document_cannot_be_updated_or_deleted(client, clinic, services, ca, rsa_key):
    doc = create(client, clinic, note(clinic))
    prov = sign_current(client, clinic, "Composition", doc["id"], rsa_key, [ca.issue(rsa_key)]).json()
    before = counts(services)
    r = client.put(f"/fhir/Composition/{doc['id']}", json={**doc, "title": "Nota corregida"}, headers=clinic["auth"])
    assert r.status_code == 409
    message = r.json()["issue"][0]["diagnostics"]
    assert "firmado electrónicamente" in message and "enmienda" in message and "relatesTo" in message
    assert client.delete(f"/fhir/Composition/{doc['id']}", headers=clinic["auth"]).status_code == 409
    # The same refusal inside a transaction Bundle, and for the signature itself.
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": f"Composition/{doc['id']}"}}],
    }
    assert client.post("/fhir", json=bundle, headers=clinic["auth"]).status_code == 409
    # Rewriting a signature is refused before anything is looked up: only $sign writes them.
    r = client.put(f"/fhir/Provenance/{prov['id']}", json={**prov, "recorded": "2020-01-01T00:00:00Z"}, headers=clinic["admin"])
    assert r.status_code == 422 and "$sign" in r.json()["issue"][0]["diagnostics"]
    assert client.delete(f"/fhir/Provenance/{prov['id']}", headers=clinic["admin"]).status_code == 409
    assert counts(services) == before
    assert client.get(f"/fhir/Composition/{doc['id']}", headers=clinic["auth"]).json() == doc
    # Re-sending the very same content changes nothing and is not an alteration.
    assert client.put(f"/fhir/Composition/{doc['id']}", json=doc, headers=clinic["auth"]).status_code == 200
    assert verification(client, clinic, "Composition", doc["id"])[0] is True


def test_a_signature_cannot_be_posted_as_a_plain_provenance(client, clinic):
    """Only $sign, which verifies it, records a signature: a forged Provenance would otherwise
    lock the document against corrections."""
    doc = create(client, clinic, note(clinic))
    forged = {
        "resourceType": "Provenance",
        "target": [{"reference": f"Composition/{doc['id']}/_history/1"}],
        "recorded": "2026-12-01T10:00:00Z",
        "agent": [{"who": {"reference": f"Practitioner/{clinic['practitioner']}"}}],
        "signature": [
            {
                "type": [{"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.1"}],
                "when": "2026-12-01T10:00:00Z",
                "who": {"reference": f"Practitioner/{clinic['practitioner']}"},
                "sigFormat": "application/jose",
                "data": "ZmFsc2E=",
            }
        ],
    }
    r = client.post("/fhir/Provenance", json=forged, headers=clinic["auth"])
    assert r.status_code == 422 and "$sign" in r.json()["issue"][0]["diagnostics"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": forged, "request": {"method": "POST", "url": "Provenance"}}]}
    assert client.post("/fhir", json=bundle, headers=clinic["auth"]).status_code == 422
    r = client.put(f"/fhir/Composition/{doc['id']}", json={**doc, "title": "Nota corregida"}, headers=clinic["auth"])
    assert r.status_code == 200  # still editable: nothing signed it


def test_unsigned_document_stays_editable(client, clinic):
    doc = create(client, clinic, note(clinic))
    r = client.put(f"/fhir/Composition/{doc['id']}", json={**doc, "title": "Nota corregida"}, headers=clinic["auth"])
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "2"


def test_amendment_keeps_both_and_both_verify(client, clinic, ca, rsa_key):
    original = create(client, clinic, note(clinic))
    chain = [ca.issue(rsa_key)]
    assert sign_current(client, clinic, "Composition", original["id"], rsa_key, chain).status_code == 201
    amendment = create(
        client,
        clinic,
        note(
            clinic,
            text="Corrección: dolor torácico típico; se solicita troponina.",
            relatesTo=[{"code": "replaces", "targetReference": {"reference": f"Composition/{original['id']}"}}],
        ),
    )
    assert sign_current(client, clinic, "Composition", amendment["id"], rsa_key, chain).status_code == 201
    assert client.get(f"/fhir/Composition/{original['id']}", headers=clinic["auth"]).json() == original
    assert verification(client, clinic, "Composition", original["id"])[0] is True
    assert verification(client, clinic, "Composition", amendment["id"])[0] is True


def test_version_named_must_be_the_current_one(client, clinic, ca, rsa_key):
    doc = create(client, clinic, note(clinic))
    jws = fea.sign_document(doc, rsa_key, [ca.issue(rsa_key)])
    changed = client.put(f"/fhir/Composition/{doc['id']}", json={**doc, "title": "Nota v2"}, headers=clinic["auth"]).json()
    r = submit(client, clinic, "Composition", doc["id"], jws, version=1)
    assert r.status_code == 409 and "la actual es la 2" in r.json()["issue"][0]["diagnostics"]
    assert submit(client, clinic, "Composition", doc["id"], jws).status_code == 422  # signed version 1, current is 2
    assert submit(client, clinic, "Composition", doc["id"], fea.sign_document(changed, rsa_key, [ca.issue(rsa_key)]), version=2).status_code == 201


# ------------------------------------------------------------------ certificates refused at signing


def test_expired_and_not_yet_valid_certificates_are_refused(client, clinic, ca, rsa_key):
    doc = create(client, clinic, note(clinic))
    r = sign_current(client, clinic, "Composition", doc["id"], rsa_key, [ca.issue(rsa_key, days=(-400, -1))])
    assert r.status_code == 422 and "vencido" in r.json()["issue"][0]["diagnostics"]
    r = sign_current(client, clinic, "Composition", doc["id"], rsa_key, [ca.issue(rsa_key, days=(1, 400))])
    assert r.status_code == 422 and "aún no era vigente" in r.json()["issue"][0]["diagnostics"]
    # Back-dating the signing time into the certificate's validity is refused too.
    expired = ca.issue(rsa_key, days=(-400, -10))
    r = sign_current(client, clinic, "Composition", doc["id"], rsa_key, [expired], signing_time=NOW - timedelta(days=20))
    assert r.status_code == 422 and "difiere de la hora del servidor" in r.json()["issue"][0]["diagnostics"]
    r = sign_current(client, clinic, "Composition", doc["id"], rsa_key, [ca.issue(rsa_key, usage=False)])
    assert r.status_code == 422 and "uso de llave" in r.json()["issue"][0]["diagnostics"]
    assert verification(client, clinic, "Composition", doc["id"])[0] is False  # nothing was stored


@pytest.fixture
def anchored(settings, ca, tmp_path, monkeypatch):
    """The server trusts only ``ca`` (a PEM bundle of trust anchors)."""
    path = tmp_path / "autoridades.pem"
    path.write_bytes(ca.pem())
    object.__setattr__(settings, "signature_trust_anchors", str(path))
    return path


def test_trust_anchors_refuse_other_authorities(client, clinic, ca, rsa_key, anchored):
    doc = create(client, clinic, note(clinic))
    rogue = Authority("AC desconocida")
    r = sign_current(client, clinic, "Composition", doc["id"], rsa_key, [rogue.issue(rsa_key), rogue.cert])
    assert r.status_code == 422 and "autoridad certificadora de confianza" in r.json()["issue"][0]["diagnostics"]
    assert sign_current(client, clinic, "Composition", doc["id"], rsa_key, [ca.issue(rsa_key)]).status_code == 201
    valid, [sig] = verification(client, clinic, "Composition", doc["id"])
    assert valid is True and sig["trustAnchorChecked"] is True


def test_verification_reports_untrusted_after_anchors_change(client, clinic, ca, rsa_key, settings, tmp_path):
    doc = create(client, clinic, note(clinic))
    assert sign_current(client, clinic, "Composition", doc["id"], rsa_key, [ca.issue(rsa_key)]).status_code == 201
    other = tmp_path / "otra.pem"
    other.write_bytes(Authority("Otra AC").pem())
    object.__setattr__(settings, "signature_trust_anchors", str(other))
    valid, [sig] = verification(client, clinic, "Composition", doc["id"])
    assert valid is False and sig["code"] == "untrusted"


def test_signer_must_be_the_caller(client, clinic, ca, rsa_key, make_token):
    doc = create(client, clinic, note(clinic))
    r = sign_current(client, clinic, "Composition", doc["id"], rsa_key, [ca.issue(rsa_key, curp="HEGT761003HDFRNM05")])
    assert r.status_code == 422 and "pertenece a otra persona" in r.json()["issue"][0]["diagnostics"] and "CURP" in r.json()["issue"][0]["diagnostics"]
    r = sign_current(client, clinic, "Composition", doc["id"], rsa_key, [ca.issue(rsa_key, rfc="HEGT7610034S2", curp=None)])
    assert r.status_code == 422 and "RFC" in r.json()["issue"][0]["diagnostics"]
    r = sign_current(client, clinic, "Composition", doc["id"], rsa_key, [ca.issue(rsa_key, rfc=None, curp=None)])
    assert r.status_code == 422 and "No se puede vincular" in r.json()["issue"][0]["diagnostics"]
    jws = fea.sign_document(doc, rsa_key, [ca.issue(rsa_key)])
    for token in (make_token("administrator"), make_token("physician")):  # not a clinician; no Practitioner
        r = submit(client, clinic, "Composition", doc["id"], jws, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code in (403, 422) and r.json()["resourceType"] == "OperationOutcome"
    assert verification(client, clinic, "Composition", doc["id"])[0] is False


def test_malformed_input_is_a_client_error(client, clinic, ca, rsa_key):
    doc = create(client, clinic, note(clinic))
    good = fea.sign_document(doc, rsa_key, [ca.issue(rsa_key)])
    head = good.split(".")[0]
    not_cert = base64.urlsafe_b64encode(orjson.dumps({"alg": "RS256", "x5c": ["bm8gZXMgdW4gY2VydGlmaWNhZG8="], "sigT": "2026-12-01T10:00:00Z"})).decode().rstrip("=")
    for jws in ("", "abc", "a.b.c.d", f"{head}.cGF5bG9hZA.c2ln", "!!!..c2ln", f"{not_cert}..c2ln", f"{head}..c2l*"):
        r = submit(client, clinic, "Composition", doc["id"], jws)
        assert r.status_code == 400, (jws, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
    bad_bodies = [{"resourceType": "Patient"}, {"resourceType": "Parameters", "parameter": [{"name": "jws", "valueInteger": 3}]}]
    for body in bad_bodies:
        assert client.post(f"/fhir/Composition/{doc['id']}/$sign", json=body, headers=clinic["auth"]).status_code == 400
    r = client.post(f"/fhir/Composition/{doc['id']}/$sign", content=b"{no json", headers={**clinic["auth"], "Content-Type": "application/fhir+json"})
    assert r.status_code == 400
    assert submit(client, clinic, "Composition", doc["id"], good, version="x").status_code == 400
    assert submit(client, clinic, "Patient", clinic["patient"], good).status_code == 404
    assert submit(client, clinic, "Composition", "no-existe", good).status_code == 404
    assert client.get("/fhir/Composition/no-existe/$verify-signature", headers=clinic["auth"]).status_code == 404
    assert client.get(f"/fhir/Patient/{clinic['patient']}/$verify-signature", headers=clinic["auth"]).status_code == 404
    assert client.get(f"/fhir/Composition/{doc['id']}/$verify-signature").status_code == 401


# ------------------------------------------------------------------ CLI


@pytest.fixture
def cli_env(settings, monkeypatch, tmp_path):
    """The CLI sees the same database as the test server."""
    monkeypatch.setenv("EXPEDIENTE_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("EXPEDIENTE_CONFIG", str(tmp_path / "none.toml"))
    if settings.database_url:
        monkeypatch.setenv("EXPEDIENTE_DATABASE_URL", settings.database_url)
    else:
        monkeypatch.delenv("EXPEDIENTE_DATABASE_URL", raising=False)


def test_cli_verify_on_the_database(client, clinic, services, ca, rsa_key, cli_env):
    from expediente.cli import app

    doc = create(client, clinic, note(clinic))
    assert sign_current(client, clinic, "Composition", doc["id"], rsa_key, [ca.issue(rsa_key)]).status_code == 201
    r = CliRunner().invoke(app, ["signature", "verify", f"Composition/{doc['id']}"])
    assert r.exit_code == 0, r.output
    assert "válida" in r.output and RFC in r.output
    _tamper(services, resource_history, doc["id"], b"descarta", b"descartA")
    r = CliRunner().invoke(app, ["signature", "verify", f"Composition/{doc['id']}"])
    assert r.exit_code == 1 and "modificado después de firmarse" in r.output
    r = CliRunner().invoke(app, ["signature", "verify", "Composition/no-existe"])
    assert r.exit_code == 2 and "No existe" in r.output


def test_cli_sign_with_sat_files(client, clinic, ca, rsa_key, tmp_path, monkeypatch, cli_env):
    """`expediente signature sign` reads the note over HTTP, signs locally with the .cer/.key
    pair and submits the JWS; the key never leaves the machine."""
    from expediente import cli

    doc = create(client, clinic, note(clinic))
    cer, key, pw = tmp_path / "firma.cer", tmp_path / "firma.key", tmp_path / "clave.txt"
    cer.write_bytes(ca.issue(rsa_key).public_bytes(serialization.Encoding.DER))
    key.write_bytes(
        rsa_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"s3creta"))
    )
    pw.write_text("s3creta\n")
    sent = []

    def http(method, url, token, body=None):
        path = url.split("testserver", 1)[1]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
        r = client.request(method, path, content=body, headers=headers)
        sent.append(body)
        return r.status_code, r.content

    monkeypatch.setattr(cli, "_fhir_http", http)
    token = clinic["auth"]["Authorization"].split()[1]
    args = ["signature", "sign", f"Composition/{doc['id']}", "--cert", str(cer), "--key", str(key), "--password-file", str(pw)]
    r = CliRunner().invoke(cli.app, [*args, "--url", "http://testserver", "--token", token])
    assert r.exit_code == 0, r.output
    assert "Provenance/" in r.output
    assert b"PRIVATE KEY" not in sent[-1] and key.read_bytes() not in sent[-1]
    assert verification(client, clinic, "Composition", doc["id"])[0] is True
    pw.write_text("equivocada")
    r = CliRunner().invoke(cli.app, [*args, "--url", "http://testserver", "--token", token])
    assert r.exit_code == 2 and "contraseña" in r.output
    # Without a password file the password is asked for, hidden.
    r = CliRunner().invoke(cli.app, [*args[:-2], "--url", "http://testserver", "--token", token], input="s3creta\n")
    assert r.exit_code == 0 and "Contraseña de la llave privada" in r.output and "s3creta" not in r.output


def test_cli_http_sends_the_bearer_token_and_returns_errors_as_answers():
    """The CLI's HTTP call (stdlib urllib) against a real socket: token sent, 4xx returned, not raised."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from expediente.cli import _fhir_http

    seen = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            seen["auth"] = self.headers["Authorization"]
            seen["body"] = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(422)
            self.end_headers()
            self.wfile.write(b'{"resourceType":"OperationOutcome"}')

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        status, body = _fhir_http("POST", f"http://127.0.0.1:{server.server_port}/fhir/x", "tok", b"{}")
    finally:
        server.shutdown()
    assert (status, body) == (422, b'{"resourceType":"OperationOutcome"}')
    assert seen == {"auth": "Bearer tok", "body": b"{}"}
