"""The relational schema, identical on SQLite and PostgreSQL (SQLAlchemy Core, no ORM).

Every clinical row carries ``patient_key``: the id of the Patient whose compartment holds the
resource (the Patient's own id for a Patient). It is the column a sharded deployment (Citus)
distributes by, so one patient's data lives together.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TYPE = sa.String(40)
ID = sa.String(64)  # FHIR ids: [A-Za-z0-9\-\.]{1,64}
TS = sa.DateTime()  # naive UTC everywhere; sorts the same on both engines

# The current version of every resource (read hot path: one primary-key lookup).
resource = sa.Table(
    "resource",
    metadata,
    sa.Column("res_type", TYPE, primary_key=True),
    sa.Column("res_id", ID, primary_key=True),
    sa.Column("version_id", sa.Integer, nullable=False),
    sa.Column("patient_key", ID, nullable=True),
    sa.Column("last_updated", TS, nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
    # Compact JSON exactly as served (meta.versionId/lastUpdated included); empty when deleted.
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Index(None, "patient_key", "res_id"),  # a patient's record in id order ($everything)
    sa.Index(None, "res_type", "last_updated"),
)

# Every version ever written, deletions included: nothing clinical is ever erased (NOM-004).
resource_history = sa.Table(
    "resource_history",
    metadata,
    sa.Column("res_type", TYPE, primary_key=True),
    sa.Column("res_id", ID, primary_key=True),
    sa.Column("version_id", sa.Integer, primary_key=True),
    sa.Column("patient_key", ID, nullable=True),
    sa.Column("last_updated", TS, nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False),
    sa.Column("method", sa.String(6), nullable=False),  # POST, PUT, DELETE
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Index(None, "last_updated"),
    sa.Index(None, "res_type", "last_updated"),
)


def _index_table(name: str, *value_columns: sa.Column) -> sa.Table:
    """A search-index table: one row per extracted value of one search parameter.

    Rows are rewritten with the current version in the same transaction as the resource.
    """
    return sa.Table(
        name,
        metadata,
        sa.Column("res_type", TYPE, nullable=False),
        sa.Column("res_id", ID, nullable=False),
        sa.Column("patient_key", ID, nullable=True),
        sa.Column("param", sa.String(64), nullable=False),
        *value_columns,
        sa.Index(None, "res_type", "res_id"),
    )


idx_token = _index_table(
    "idx_token",
    sa.Column("system", sa.String(255), nullable=True),
    sa.Column("code", sa.String(255), nullable=True),
    sa.Column("text_norm", sa.String(255), nullable=True),  # accent-free lowercase display/text
    # Identifier.type coding, for the :of-type modifier (one row per type coding).
    sa.Column("type_system", sa.String(255), nullable=True),
    sa.Column("type_code", sa.String(255), nullable=True),
)
# Every lookup index ends with res_id: an equality probe for one resource ("has this
# Observation that code?") is then one seek, whatever the planner's statistics say.
# Token: res_id before system, so "status=active" (no system) still probes one resource with
# one seek; a system|code lookup filters system inside the index.
sa.Index(
    "ix_idx_token_lookup", idx_token.c.res_type, idx_token.c.param, idx_token.c.code, idx_token.c.res_id, idx_token.c.system
)

idx_string = _index_table(
    "idx_string",
    sa.Column("value_norm", sa.String(255), nullable=False),  # accent-free lowercase
    sa.Column("value_exact", sa.String(255), nullable=False),
)
sa.Index("ix_idx_string_lookup", idx_string.c.res_type, idx_string.c.param, idx_string.c.value_norm)

idx_reference = _index_table(
    "idx_reference",
    sa.Column("target_type", TYPE, nullable=True),
    sa.Column("target_id", ID, nullable=True),
    sa.Column("url", sa.String(512), nullable=True),  # absolute or canonical references
)
sa.Index(
    "ix_idx_reference_lookup",
    idx_reference.c.target_id,
    idx_reference.c.target_type,
    idx_reference.c.param,
    idx_reference.c.res_type,
    idx_reference.c.res_id,
)

idx_date = _index_table(
    "idx_date",
    sa.Column("low", TS, nullable=True),  # inclusive lower bound of the value's range
    sa.Column("high", TS, nullable=True),  # inclusive upper bound
)
sa.Index("ix_idx_date_lookup", idx_date.c.res_type, idx_date.c.param, idx_date.c.low)

idx_number = _index_table(
    "idx_number",
    sa.Column("value", sa.Float, nullable=True),
)
sa.Index("ix_idx_number_lookup", idx_number.c.res_type, idx_number.c.param, idx_number.c.value)

idx_quantity = _index_table(
    "idx_quantity",
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("system", sa.String(255), nullable=True),
    sa.Column("code", sa.String(255), nullable=True),
)
sa.Index("ix_idx_quantity_lookup", idx_quantity.c.res_type, idx_quantity.c.param, idx_quantity.c.value)

idx_uri = _index_table(
    "idx_uri",
    sa.Column("uri", sa.String(512), nullable=False),
)
sa.Index("ix_idx_uri_lookup", idx_uri.c.res_type, idx_uri.c.param, idx_uri.c.uri, idx_uri.c.res_id)

# Composite parameters (Observation code-value-quantity...): one row per combination of the
# components' values taken from the same element, so "code X with value Y" cannot match a code
# and a value from different places. Each component slot holds what its own type needs:
# token/reference/string -> system + code; quantity -> value + system + code; date -> low/high.
idx_composite = _index_table(
    "idx_composite",
    sa.Column("system1", sa.String(255), nullable=True),
    sa.Column("code1", sa.String(255), nullable=True),
    sa.Column("system2", sa.String(255), nullable=True),
    sa.Column("code2", sa.String(255), nullable=True),
    sa.Column("value2", sa.Float, nullable=True),
    sa.Column("low2", TS, nullable=True),
    sa.Column("high2", TS, nullable=True),
)
sa.Index(
    "ix_idx_composite_lookup", idx_composite.c.res_type, idx_composite.c.param, idx_composite.c.code1, idx_composite.c.res_id
)

# The deny rules of patients' active Consents, derived from each Consent like index rows
# (written in the same transaction, rebuilt by reindex), so the access policy can put "this
# patient denies this institution / this category" inside a search query. ``param`` is
# "deny"; a null actor denies everyone, a null label the whole record.
consent_directive = _index_table(
    "consent_directive",
    sa.Column("actor_type", TYPE, nullable=True),
    sa.Column("actor_id", ID, nullable=True),
    sa.Column("label_system", sa.String(255), nullable=True),
    sa.Column("label_code", sa.String(255), nullable=True),
    sa.Column("period_low", TS, nullable=True),
    sa.Column("period_high", TS, nullable=True),
)
sa.Index("ix_consent_directive_patient", consent_directive.c.patient_key, consent_directive.c.label_code)

# Care relationships, derived like index rows from Encounter, EpisodeOfCare, CareTeam and
# ServiceRequest: "this practitioner / this organization cares for this patient". The access
# policy probes it once per row it decides ((actor, patient) is one index seek).
care_link = _index_table(
    "care_link",
    sa.Column("actor_type", TYPE, nullable=False),
    sa.Column("actor_id", ID, nullable=False),
)
sa.Index("ix_care_link_actor", care_link.c.actor_id, care_link.c.actor_type, care_link.c.patient_key)

# Records of the same person (master patient index), derived like index rows from each
# Patient's ``link`` (written by the MPI's link and merge operations, always in both records):
# "this record and ``linked_key`` are one person". The access policy and $everything follow
# it, so a physician caring for the ISSSTE record sees what IMSS recorded.
person_link = _index_table(
    "person_link",
    sa.Column("linked_key", ID, nullable=False),
    sa.Column("link_type", sa.String(16), nullable=False),
)
sa.Index("ix_person_link_patient", person_link.c.patient_key, person_link.c.linked_key)

# Master patient index (mpi/index.py), derived from each Patient like index rows (same
# transaction, rebuilt by reindex): ``mpi_person`` holds the normalized identity features (one
# row per current Patient, ``param`` "person"), ``mpi_key`` its blocking keys ("kind:value",
# ``param`` the kind), so $match finds its candidates with a few index seeks.
mpi_person = _index_table(
    "mpi_person",
    sa.Column("curp", sa.String(18), nullable=True),
    sa.Column("curp_other", sa.String(40), nullable=True),
    sa.Column("first_surname", sa.String(120), nullable=False),
    sa.Column("second_surname", sa.String(120), nullable=False),
    sa.Column("given", sa.String(200), nullable=False),
    sa.Column("sex", sa.String(8), nullable=True),
    sa.Column("birth_date", sa.String(10), nullable=True),
    sa.Column("birth_state", sa.String(2), nullable=True),
    sa.Column("identifiers", sa.Text, nullable=True),  # "system|value" lines
)
mpi_key = _index_table(
    "mpi_key",
    sa.Column("key", sa.String(200), nullable=False),
)
sa.Index("ix_mpi_key_lookup", mpi_key.c.key, mpi_key.c.res_id)

INDEX_TABLES: dict[str, sa.Table] = {
    "token": idx_token,
    "string": idx_string,
    "reference": idx_reference,
    "date": idx_date,
    "number": idx_number,
    "quantity": idx_quantity,
    "uri": idx_uri,
    "composite": idx_composite,
    "consent": consent_directive,
    "care": care_link,
    "person": person_link,
    "mpi_person": mpi_person,
    "mpi_key": mpi_key,
}

# Resource types whose index rows are being (re)computed, e.g. after the search parameters
# change. While a row is here, searches of that type do not answer silently partial results.
search_reindex = sa.Table(
    "search_reindex",
    metadata,
    sa.Column("res_type", TYPE, primary_key=True),
    sa.Column("requested", TS, nullable=False),
    sa.Column("reason", sa.String(255), nullable=False),
    sa.Column("after_id", ID, nullable=True),  # progress: every res_id <= this one is done
)

# People and systems that may sign in. Passwords are argon2id hashes, never the password.
account = sa.Table(
    "account",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(128), nullable=False, unique=True),
    sa.Column("kind", sa.String(10), nullable=False),  # "person" or "system" (OAuth2 client)
    sa.Column("secret_hash", sa.String(255), nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("display_name", sa.String(255), nullable=True),
    sa.Column("organization", sa.String(64), nullable=True),  # CLUES of the institution
    sa.Column("practitioner_ref", sa.String(128), nullable=True),  # e.g. Practitioner/123
    sa.Column("patient_ref", sa.String(128), nullable=True),  # for a patient's own account
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    sa.Column("created", TS, nullable=False),
    # Consecutive failed logins; at the limit the account is locked until `locked_until`.
    sa.Column("failed_logins", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("locked_until", TS, nullable=True),
    # RFC 6238 second factor: base32 secret, and the last time step accepted (a code is used once).
    sa.Column("totp_secret", sa.String(64), nullable=True),
    sa.Column("totp_last_step", sa.BigInteger, nullable=True),
)

# Refresh tokens (RFC 6749 section 6), stored only as SHA-256 hashes. Each login starts a
# family; every use rotates to a new token of the family, and reuse of a spent one revokes it.
refresh_token = sa.Table(
    "refresh_token",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("family", sa.String(64), nullable=False),
    sa.Column("username", sa.String(128), nullable=False),
    sa.Column("scope", sa.String(2048), nullable=False),
    sa.Column("issued", TS, nullable=False),
    sa.Column("expires", TS, nullable=False),  # idle limit, never past the family's end
    sa.Column("family_expires", TS, nullable=False),  # absolute limit of the login
    sa.Column("used", TS, nullable=True),
    sa.Column("revoked", TS, nullable=True),
    sa.Index(None, "family"),
    sa.Index(None, "username"),
)

# Every access decision, allowed or denied, and every login: the audit trail (NOM-024), served
# as AuditEvent. Rows form one hash chain in seq order (security/audit_chain.py): each row's
# hash covers the previous row's hash and every other column, so editing, deleting, inserting
# or reordering rows is detected by `expediente audit verify`. The chain assigns seq itself.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("recorded", TS, nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("role", sa.String(32), nullable=True),
    sa.Column("action", sa.String(16), nullable=False),  # read, vread, search, create, update ...
    sa.Column("res_type", TYPE, nullable=True),
    sa.Column("res_id", ID, nullable=True),
    sa.Column("patient_key", ID, nullable=True),
    sa.Column("outcome", sa.String(8), nullable=False),  # allowed | denied | failed
    sa.Column("reason", sa.String(255), nullable=True),
    sa.Column("source", sa.String(64), nullable=True),  # client address
    sa.Column("entities", sa.Text, nullable=True),  # JSON array of the "Type/id" returned; NULL: none
    sa.Column("purpose", sa.String(16), nullable=True),  # "BTG" for break-the-glass; NULL: routine
    sa.Column("chain_version", sa.SmallInteger, nullable=False),  # encoding the hash was computed with
    sa.Column("hash", sa.String(64), nullable=False),  # hex SHA-256, see security/audit_chain.py
    # Newest-first pages (keyset on seq) of one patient's or one user's entries.
    sa.Index(None, "patient_key", "seq"),
    sa.Index(None, "actor", "seq"),
)
# The break-the-glass review list: only the rare entries with a purpose are indexed.
sa.Index(
    "ix_audit_log_purpose_seq",
    audit_log.c.purpose,
    audit_log.c.seq,
    postgresql_where=audit_log.c.purpose.is_not(None),
    sqlite_where=audit_log.c.purpose.is_not(None),
)

# The end of the audit chain, one row (id 1): the last seq and its hash. Appends lock it (on
# PostgreSQL, FOR UPDATE right before COMMIT), which makes the chain order the seq order with
# any number of server processes; verify compares it with the log to detect a cut tail.
audit_chain_head = sa.Table(
    "audit_chain_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("last_hash", sa.String(64), nullable=False),
)


# Candidate pairs the MPI could not decide alone (grade probable or possible), for a person
# to link or reject; a rejected pair is remembered so the matcher never proposes it again.
mpi_review = sa.Table(
    "mpi_review",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("patient_a", ID, nullable=False),  # the smaller id of the pair
    sa.Column("patient_b", ID, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("grade", sa.String(16), nullable=False),
    sa.Column("reasons", sa.Text, nullable=False),  # JSON list of Spanish reasons
    sa.Column("status", sa.String(16), nullable=False),  # pending | linked | rejected
    sa.Column("created", TS, nullable=False),
    sa.Column("decided", TS, nullable=True),
    sa.Column("decided_by", sa.String(128), nullable=True),
    sa.UniqueConstraint("patient_a", "patient_b"),
    sa.Index(None, "status", "score"),
)

# Terminology (not patient data; reference tables when sharded): the code systems the server
# knows and their concepts. Shipped catalogs are seeded at `db upgrade`; official DGIS files
# replace them with `expediente catalog load` (expediente/mx/catalog_store.py).
code_system = sa.Table(
    "code_system",
    metadata,
    sa.Column("id", ID, primary_key=True),  # FHIR id of the CodeSystem (and of its all-codes ValueSet)
    sa.Column("url", sa.String(255), nullable=False, unique=True),
    sa.Column("name", sa.String(64), nullable=False),  # computable name
    sa.Column("title", sa.String(255), nullable=False),  # Spanish
    sa.Column("version", sa.String(64), nullable=True),
    sa.Column("complete", sa.Boolean, nullable=False),  # False: a subset (CodeSystem.content "fragment")
    sa.Column("origin", sa.String(8), nullable=False),  # "shipped" (seeded) or "loaded" (an official file)
    sa.Column("digest", sa.String(64), nullable=False),  # SHA-256 of the content, to reseed only on change
    sa.Column("concept_count", sa.Integer, nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),  # +1 on every load: in-process caches compare it
    sa.Column("loaded", TS, nullable=False),
)

code_concept = sa.Table(
    "code_concept",
    metadata,
    sa.Column("system_id", ID, primary_key=True),
    sa.Column("code", sa.String(64), primary_key=True),
    sa.Column("display", sa.Text, nullable=False),  # Spanish
    sa.Column("sex", sa.String(6), nullable=True),  # "male"/"female": the code applies only to that sex
    sa.Column("age_low", sa.String(8), nullable=True),  # inclusive limits, number and UCUM unit: "10 a", "28 d"
    sa.Column("age_high", sa.String(8), nullable=True),
    sa.Column("properties", sa.Text, nullable=True),  # JSON object of other properties (e.g. the INEGI key)
)


# ---------------------------------------------------------------------------------------------
# Imaging archive (expediente/dicom/): the DICOM index, one row per study, series and instance,
# with the main tags as columns. The instances' bytes are blobs, kept exactly as received.
UID = sa.String(64)

dicom_study = sa.Table(
    "dicom_study",
    metadata,
    sa.Column("study_uid", UID, primary_key=True),
    # Patient module as the header gives it (the patient level of C-FIND answers from here).
    sa.Column("patient_id", sa.String(64), nullable=False, default=""),
    sa.Column("issuer", sa.String(64), nullable=False, default=""),
    sa.Column("patient_name", sa.String(324), nullable=False, default=""),
    # Lower case, no accents (dicom.names). Byte order on PostgreSQL, so that a prefix match
    # (PatientName=garc*) walks its index there as it does on SQLite.
    sa.Column("patient_name_norm", sa.String(324).with_variant(sa.String(324, collation="C"), "postgresql"), nullable=False, default=""),
    sa.Column("patient_birth_date", sa.String(8), nullable=False, default=""),
    sa.Column("patient_sex", sa.String(16), nullable=False, default=""),
    sa.Column("study_date", sa.String(8), nullable=False, default=""),
    sa.Column("study_time", sa.String(16), nullable=False, default=""),
    sa.Column("accession_number", sa.String(64), nullable=False, default=""),
    sa.Column("study_id", sa.String(16), nullable=False, default=""),
    sa.Column("study_description", sa.String(255), nullable=False, default=""),
    sa.Column("referring_physician", sa.String(324), nullable=False, default=""),
    sa.Column("modalities", sa.String(64), nullable=False, default=""),  # backslash-separated
    sa.Column("institution", sa.String(32), nullable=False, default=""),  # CLUES that sent it
    sa.Column("series_count", sa.Integer, nullable=False, default=0),
    sa.Column("instance_count", sa.Integer, nullable=False, default=0),
    # The record it belongs to: the FHIR Patient and the ImagingStudy that describes it (both
    # empty until the study is reconciled with a patient).
    sa.Column("patient_key", ID, nullable=True),
    sa.Column("imaging_study_id", ID, nullable=True),
    sa.Column("received", TS, nullable=False),
    sa.Column("updated", TS, nullable=False),
    sa.Column("linked", TS, nullable=True),  # when the ImagingStudy last reflected the study
    sa.Index(None, "patient_id", "issuer"),
    sa.Index(None, "patient_name_norm"),
    sa.Index(None, "study_date"),
    sa.Index(None, "accession_number"),
    sa.Index(None, "patient_key"),
    sa.Index(None, "institution", "study_date"),
    sa.Index(None, "updated"),
)

dicom_series = sa.Table(
    "dicom_series",
    metadata,
    sa.Column("series_uid", UID, primary_key=True),
    sa.Column("study_uid", UID, nullable=False),
    sa.Column("modality", sa.String(16), nullable=False, default=""),
    sa.Column("series_number", sa.Integer, nullable=True),
    sa.Column("series_description", sa.String(255), nullable=False, default=""),
    sa.Column("body_part", sa.String(64), nullable=False, default=""),
    sa.Column("series_date", sa.String(8), nullable=False, default=""),
    sa.Column("instance_count", sa.Integer, nullable=False, default=0),
    sa.Index(None, "study_uid"),
    sa.Index(None, "modality"),
)

dicom_instance = sa.Table(
    "dicom_instance",
    metadata,
    sa.Column("sop_instance_uid", UID, primary_key=True),
    sa.Column("series_uid", UID, nullable=False),
    sa.Column("study_uid", UID, nullable=False),
    sa.Column("sop_class_uid", UID, nullable=False),
    sa.Column("instance_number", sa.Integer, nullable=True),
    sa.Column("transfer_syntax", UID, nullable=False),
    sa.Column("blob_key", sa.String(64), nullable=False),  # SHA-256 of the Part-10 file: its checksum
    sa.Column("size", sa.BigInteger, nullable=False),
    # Where the Pixel Data value starts in the file, and its length (-1: encapsulated), so a
    # frame is read as a byte range without the rest of the file.
    sa.Column("pixel_offset", sa.BigInteger, nullable=True),
    sa.Column("pixel_length", sa.BigInteger, nullable=True),
    sa.Column("frames", sa.Integer, nullable=False, default=1),
    sa.Column("rows", sa.Integer, nullable=True),
    sa.Column("columns", sa.Integer, nullable=True),
    sa.Column("received", TS, nullable=False),
    sa.Column("origin", sa.String(96), nullable=False),  # "dimse:<AE>" or "stow:<subject>"
    # The instance's DICOM JSON (bulk data as BulkDataURI placeholders), built after the
    # instance is acknowledged; a series' metadata is these fragments joined.
    sa.Column("metadata", sa.LargeBinary, nullable=True),
    # Extra attributes an institution indexes (setting dicom_extra_tags): JSON object.
    sa.Column("extra", sa.Text, nullable=True),
    sa.Index(None, "series_uid", "instance_number"),
    sa.Index(None, "study_uid"),
)

# Each word of a study's normalized patient name (dicom.names.name_tokens), so a fuzzy name
# search (QIDO fuzzymatching, any component's prefix) is an index range, not a table scan.
dicom_study_name = sa.Table(
    "dicom_study_name",
    metadata,
    # Byte order on PostgreSQL too: LIKE 'prefix%' then walks the primary key.
    sa.Column("token", sa.String(64).with_variant(sa.String(64, collation="C"), "postgresql"), primary_key=True),
    sa.Column("study_uid", UID, primary_key=True),
)

# The items of the sequences the index matches on (dicom/sequences.py), one row per item
# attribute: a study's (OtherPatientIDsSequence, ProcedureCodeSequence...) or a series'
# (RequestAttributesSequence). C-FIND and QIDO sequence matching read them.
dicom_item = sa.Table(
    "dicom_item",
    metadata,
    sa.Column("owner_uid", UID, primary_key=True),  # the study or series UID, by the sequence's level
    sa.Column("sequence", sa.String(64), primary_key=True),  # keyword
    sa.Column("item", sa.Integer, primary_key=True),  # 0-based, in the order received
    sa.Column("keyword", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(324).with_variant(sa.String(324, collation="C"), "postgresql"), nullable=False),
    sa.Index(None, "sequence", "keyword", "value"),
)

# Studies that could not be attached to a patient with certainty: they wait here for a person
# to reconcile them, never attached silently to the wrong record.
dicom_reconcile = sa.Table(
    "dicom_reconcile",
    metadata,
    sa.Column("study_uid", UID, primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),  # Spanish
    sa.Column("candidates", sa.Text, nullable=True),  # JSON list of Patient ids that matched
    sa.Column("status", sa.String(16), nullable=False),  # pending | resolved
    sa.Column("created", TS, nullable=False),
    sa.Column("resolved", TS, nullable=True),
    sa.Column("resolved_by", sa.String(128), nullable=True),
    sa.Index(None, "status", "created"),
)

# Rendered thumbnails, kept so a prior's preview is served without decoding: keyed by the
# instance file's SHA-256 (dicom_instance.blob_key), the frame, the box size and the media
# type; the image itself is a blob (encrypted at rest like the instance).
dicom_thumbnail = sa.Table(
    "dicom_thumbnail",
    metadata,
    sa.Column("instance_key", sa.String(64), primary_key=True),
    sa.Column("frame", sa.Integer, primary_key=True),
    sa.Column("size", sa.Integer, primary_key=True),
    sa.Column("media_type", sa.String(16), primary_key=True),
    sa.Column("blob_key", sa.String(64), nullable=False),
    sa.Column("created", TS, nullable=False),
)
