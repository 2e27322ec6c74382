"""What only the S3 back end has: HTTP Range reads, multipart uploads, If-Match reads during a
rotation, object names, startup errors in Spanish, and the imaging archive on a bucket. Against
moto's S3 server over real HTTP (tests/blob_backends.py)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import os
import socket
from contextlib import contextmanager

import moto.settings
import pydicom
import pytest
import sqlalchemy as sa
from blob_backends import BUCKET, s3_backend, s3_client, s3_endpoint  # noqa: F401 - fixtures
from dicom_samples import ct_slice
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from typer.testing import CliRunner

from expediente.app import Services
from expediente.blobs import BlobConfigError, BlobStoreError, check_blob_store, make_blob_store
from expediente.blobs.encryption import MAGIC, SEGMENT_SIZE, TAG, read_header
from expediente.blobs.keyring import Keyring
from expediente.blobs.local import LocalBlobStore
from expediente.blobs.s3 import HEAD_BYTES, PART_SIZE
from expediente.cli import app as cli
from expediente.db.migrate import upgrade
from expediente.db.schema import dicom_instance
from expediente.dicom.archive import Origin, Refused
from expediente.dicom.status import OUT_OF_RESOURCES

SEG = SEGMENT_SIZE + TAG


def keyring(*ids: str) -> Keyring:
    return Keyring({i: os.urandom(32) for i in ids}, ids[-1])


@contextmanager
def get_requests(store):
    """The Range header of every GetObject the store's client sends (boto3's own event hook)."""
    seen: list[str | None] = []

    def hook(params, **_):
        seen.append(params.get("Range"))

    store.client.meta.events.register("provide-client-params.s3.GetObject", hook)
    try:
        yield seen
    finally:
        store.client.meta.events.unregister("provide-client-params.s3.GetObject", hook)


def test_reads_fetch_only_the_bytes_asked_for(s3_backend):
    plain = s3_backend.new()
    data = os.urandom(1_000_000)
    key = plain.put(data)
    with get_requests(plain) as ranges:
        assert plain.get(key, 500_000, 500_100) == data[500_000:500_100]
    # The first request brings the object's size and first bytes; the second only the range.
    assert ranges == [f"bytes=0-{HEAD_BYTES - 1}", "bytes=500000-500099"]
    with get_requests(plain) as ranges:
        assert plain.get(key, 10, 20) == data[10:20]  # a header read: one request
    assert ranges == [f"bytes=0-{HEAD_BYTES - 1}"]

    encrypted = s3_backend.new(keyring("k1"))
    data = os.urandom(10 * SEGMENT_SIZE)
    key = encrypted.put(data)
    header = read_header(io.BytesIO(s3_backend.raw(encrypted, key))).size
    with get_requests(encrypted) as ranges:
        assert encrypted.get(key, 4 * SEGMENT_SIZE + 10, 5 * SEGMENT_SIZE + 10) == data[4 * SEGMENT_SIZE + 10 : 5 * SEGMENT_SIZE + 10]
    # Segments 4 and 5, with their tags, in one request: not the other 8.
    assert ranges == [f"bytes=0-{HEAD_BYTES - 1}", f"bytes={header + 4 * SEG}-{header + 6 * SEG - 1}"]


def test_a_blob_over_8_mb_is_uploaded_in_parts(s3_backend):
    data = os.urandom(PART_SIZE + 1024 * 1024)
    key = hashlib.sha256(data).hexdigest()
    s3 = s3_client(s3_backend.endpoint)
    for ring in (None, keyring("k1")):
        store = s3_backend.new(ring)
        spooled = store.temporary()  # the ingest's path: a spool file, then adopt
        spooled.write(data)
        spooled.sync_and_close()
        assert store.adopt(spooled.path, key) and not spooled.path.exists()
        etag = s3.head_object(Bucket=BUCKET, Key=store._name(key))["ETag"]
        assert etag.strip('"').endswith("-2"), etag  # a completed two-part upload
        assert store.get(key) == data
        assert store.get(key, PART_SIZE - 5, PART_SIZE + 5) == data[PART_SIZE - 5 : PART_SIZE + 5]
        assert store.key_id_of(key) == (ring.current if ring else None)
        assert not s3_backend.leftovers(store)
    assert s3_backend.raw(store, key).startswith(MAGIC)


def test_a_read_during_rotation_starts_again_on_the_new_object(s3_backend):
    both = Keyring({"k1": os.urandom(32), "k2": os.urandom(32)}, "k1")
    store = s3_backend.new(both)
    data = os.urandom(5 * SEGMENT_SIZE)
    key = store.put(data)
    # The same blob encrypted under k2, as rotation would write it.
    other = s3_backend.new(Keyring(both.keys, "k2"))
    rotated = s3_backend.raw(other, other.put(data))
    replaced = []

    def replace_once(params, **_):
        if not replaced and not params.get("Range", "").startswith("bytes=0-"):
            s3_backend.overwrite(store, key, rotated)  # between the first and the second request
            replaced.append(True)

    store.client.meta.events.register("provide-client-params.s3.GetObject", replace_once)
    try:
        with get_requests(store) as ranges:
            assert store.get(key, SEGMENT_SIZE, 3 * SEGMENT_SIZE) == data[SEGMENT_SIZE : 3 * SEGMENT_SIZE]
    finally:
        store.client.meta.events.unregister("provide-client-params.s3.GetObject", replace_once)
    assert replaced and len(ranges) == 4  # the If-Match range failed; the read began again
    assert store.key_id_of(key) == "k2"


def test_object_names_match_the_local_layout_so_a_store_moves_by_copying(s3_backend, tmp_path):
    ring = keyring("k1")
    local = LocalBlobStore(tmp_path / "blobs", ring)
    plain_key = LocalBlobStore(tmp_path / "blobs").put(b"radiografia sin cifrar")
    keys = {local.put(os.urandom(n)) for n in (0, 100, SEGMENT_SIZE + 7)} | {plain_key}
    store = s3_backend.new(ring)
    s3 = s3_client(s3_backend.endpoint)
    for path in (tmp_path / "blobs").glob("??/??/*"):  # `aws s3 sync data/blobs s3://bucket/prefix`
        s3.upload_file(str(path), BUCKET, store.prefix + str(path.relative_to(tmp_path / "blobs")))
    # Objects under the prefix that are not blobs are not listed.
    key = next(iter(keys))
    for stray in ("LEEME.txt", f"00/00/{key}", f"{key[:2]}/{key[2:4]}/{key}.tmp", "spool/.tmp-x"):
        s3.put_object(Bucket=BUCKET, Key=store.prefix + stray, Body=b"x")
    assert set(store.keys()) == keys
    assert all(store.get(k) == local.get(k) for k in keys)
    assert store.key_id_of(plain_key) is None and store.key_id_of(key if key != plain_key else min(keys - {plain_key})) == "k1"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bad_settings_are_said_in_spanish(s3_backend, tmp_path, monkeypatch):
    settings = s3_backend.settings(tmp_path / "data")
    check_blob_store(settings)  # the good ones reach the bucket
    with pytest.raises(BlobStoreError, match="no existe el bucket 'no-existe-este-bucket'"):
        check_blob_store(dataclasses.replace(settings, s3_bucket="no-existe-este-bucket"))
    with pytest.raises(BlobConfigError, match="necesita s3_bucket"):
        make_blob_store(dataclasses.replace(settings, s3_bucket=""))
    with pytest.raises(BlobConfigError, match="blob_backend desconocido 'ftp'"):
        make_blob_store(dataclasses.replace(settings, blob_backend="ftp"))
    with pytest.raises(BlobStoreError, match="no se puede conectar con el almacén S3 en http://127.0.0.1"):
        check_blob_store(dataclasses.replace(settings, s3_endpoint=f"http://127.0.0.1:{_closed_port()}"))
    # The server checks signatures from here on: unknown keys are refused.
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    with pytest.raises(BlobStoreError, match="rechazó las credenciales"):
        check_blob_store(dataclasses.replace(settings, s3_access_key="llave-que-no-existe"))
    with pytest.raises(BlobStoreError, match="rechazó las credenciales"):
        make_blob_store(dataclasses.replace(settings, s3_access_key="llave-que-no-existe")).get("0" * 64)


def test_cli_and_serve_refuse_a_missing_bucket_without_a_traceback(s3_backend, tmp_path, monkeypatch):
    settings = dataclasses.replace(s3_backend.settings(tmp_path / "data"), s3_bucket="no-existe-este-bucket")
    for name, value in s3_backend.env(settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("EXPEDIENTE_CONFIG", str(tmp_path / "none.toml"))
    for args in (["blobs", "status"], ["blobs", "rotate-key"], ["serve"]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 2 and isinstance(r.exception, SystemExit), (args, r.output, r.exception)
        assert "no existe el bucket 'no-existe-este-bucket'" in r.output and "Traceback" not in r.output
    monkeypatch.setenv("EXPEDIENTE_S3_BUCKET", BUCKET)
    r = CliRunner().invoke(cli, ["blobs", "status"])
    assert r.exit_code == 0 and f"bucket '{BUCKET}'" in r.output and "total: 0" in r.output


def _dataset_bytes(part10: bytes) -> bytes:
    """The dataset as a modality sends it over DIMSE: the Part-10 file without its file meta."""
    group_length = int.from_bytes(part10[140:144], "little")  # (0002,0000) UL, explicit VR
    return part10[144 + group_length :]


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_imaging_instances_on_s3_read_back_bit_identical(settings, s3_backend, encrypted):
    values = {"blob_key": base64.b64encode(os.urandom(32)).decode()} if encrypted else {}
    settings = s3_backend.apply(dataclasses.replace(settings, **values))
    services = Services.build(settings)
    try:
        upgrade(services.engine)
        archive = services.archive
        study = generate_uid()
        stow = ct_slice(study_uid=study, number=1, size=256)
        stored = archive.store_file(stow, origin=Origin("stow", subject="prueba"))
        second = ct_slice(study_uid=study, number=2, size=256)
        sop_uid, dataset = pydicom.dcmread(io.BytesIO(second)).SOPInstanceUID, _dataset_bytes(second)
        receipt = archive.begin_store(
            sop_class_uid=CTImageStorage, sop_instance_uid=sop_uid, transfer_syntax=ExplicitVRLittleEndian, origin=Origin("dimse", "CT_1")
        )
        for i in range(0, len(dataset), 16384):
            receipt.write(dataset[i : i + 16384])
        receipt.finish()

        refs = {r.sop_instance_uid: r for r in archive.instances(study_uid=study)}
        assert set(refs) == {stored.sop_instance_uid, sop_uid}
        first = refs[stored.sop_instance_uid]
        assert archive.read(first) == stow and hashlib.sha256(stow).hexdigest() == first.blob_key
        pixels = pydicom.dcmread(io.BytesIO(stow)).PixelData
        assert archive.read(first, first.pixel_offset, first.pixel_offset + first.pixel_length) == pixels
        assert archive.read(refs[sop_uid]).endswith(dataset)
        # The bytes are in the bucket, under the prefix; nothing is left in the local spool.
        s3 = s3_client(s3_backend.endpoint)
        raw = s3.get_object(Bucket=BUCKET, Key=archive.blobs._name(first.blob_key))["Body"].read()
        assert (raw == stow) is not encrypted and raw.startswith(MAGIC) is encrypted
        assert not s3_backend.leftovers(archive.blobs)
        assert not [p for p in settings.blob_dir.rglob("*") if p.is_file()]
        # The follower builds the instances' metadata from the header read back from S3.
        services.follower.catch_up()
        with services.engine.connect() as conn:
            rows = conn.execute(sa.select(dicom_instance.c.metadata).where(dicom_instance.c.study_uid == study)).scalars().all()
        assert len(rows) == 2 and all(rows)
    finally:
        services.close()



def test_an_instance_the_store_cannot_take_is_refused_and_nothing_is_indexed(settings, s3_backend):
    settings = dataclasses.replace(s3_backend.apply(settings), s3_bucket="no-existe-este-bucket")
    services = Services.build(settings)
    try:
        upgrade(services.engine)
        study = generate_uid()
        for size in (64, 2048):  # one PUT; a multipart upload (8 MB of pixels)
            with pytest.raises(Refused) as refused:
                services.archive.store_file(ct_slice(study_uid=study, size=size), origin=Origin("stow", subject="prueba"))
            assert refused.value.status == OUT_OF_RESOURCES and "no existe el bucket 'no-existe-este-bucket'" in refused.value.reason
        assert services.archive.instances(study_uid=study) == []
        assert not [p for p in settings.blob_dir.rglob("*") if p.is_file()]
    finally:
        services.close()
