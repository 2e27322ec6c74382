"""Blob encryption at rest: segmented AES-256-GCM, range reads, tamper detection, key rotation,
on each blob back end (local files and an S3 server over HTTP) where the interface is tested."""

from __future__ import annotations

import base64
import hashlib
import io
import os

import orjson
import pytest
from hypothesis import given, settings as hsettings, strategies as st
from blob_backends import blob_backend, s3_endpoint  # noqa: F401 - fixtures
from typer.testing import CliRunner

from expediente.blobs import encryption
from expediente.blobs.encryption import MAGIC, SEGMENT_SIZE, BlobIntegrityError
from expediente.blobs.keyring import Keyring, KeyringError, UnknownKey, add_key, load_keyring, parse_key, read_keyring_file
from expediente.blobs import make_blob_store
from expediente.blobs.rotation import PLAINTEXT, census, rotate
from expediente.cli import app as cli
from expediente.config import Settings

SEG = SEGMENT_SIZE + encryption.TAG


def keyring(*ids: str) -> Keyring:
    return Keyring({i: os.urandom(32) for i in ids}, ids[-1])


@pytest.fixture
def store(blob_backend):
    return blob_backend.new(keyring("k1"))


def test_encrypted_blob_keeps_its_content_address_and_hides_the_bytes(store, blob_backend):
    data = b"DICM" + os.urandom(3 * SEGMENT_SIZE + 123)
    key = store.put(data)
    assert key == hashlib.sha256(data).hexdigest()
    assert store.put(data) == key  # deduplicated
    raw = blob_backend.raw(store, key)
    assert raw.startswith(MAGIC) and b"DICM" not in raw and data[1000:1032] not in raw
    assert store.get(key) == data
    assert store.get(key, SEGMENT_SIZE - 2, SEGMENT_SIZE + 2) == data[SEGMENT_SIZE - 2 : SEGMENT_SIZE + 2]
    assert store.key_id_of(key) == "k1"
    assert not blob_backend.leftovers(store)
    with pytest.raises(ValueError, match="rango"):
        store.get(key, -1)


@hsettings(max_examples=40, deadline=None)
@given(
    size=st.sampled_from([0, 1, 17, SEGMENT_SIZE - 1, SEGMENT_SIZE, SEGMENT_SIZE + 1, 2 * SEGMENT_SIZE, 2 * SEGMENT_SIZE + 5]),
    start=st.integers(0, 3 * SEGMENT_SIZE),
    length=st.integers(0, 3 * SEGMENT_SIZE),
)
def test_encrypted_range_reads_match_slicing(blob_backend, size, start, length):
    store = blob_backend.new(keyring("k1"))
    data = os.urandom(size)
    key = store.put(data)
    assert store.get(key, start, start + length) == data[start : start + length]
    assert store.get(key, start) == data[start:]


def test_range_read_decrypts_only_the_segments_it_needs(store, monkeypatch):
    data = os.urandom(10 * SEGMENT_SIZE)
    key = store.put(data)
    seen: list[int] = []
    original = encryption.EncryptedFile._decrypt
    monkeypatch.setattr(encryption.EncryptedFile, "_decrypt", lambda self, i, data: seen.append(i) or original(self, i, data))
    assert store.get(key, 4 * SEGMENT_SIZE + 10, 5 * SEGMENT_SIZE + 10) == data[4 * SEGMENT_SIZE + 10 : 5 * SEGMENT_SIZE + 10]
    assert seen == [4, 5]


def test_tampered_header_segment_or_tag_is_a_clear_error(store, blob_backend):
    data = os.urandom(3 * SEGMENT_SIZE)
    key = store.put(data)
    pristine = blob_backend.raw(store, key)
    header = encryption.read_header(io.BytesIO(pristine)).size
    # segment size, salt, data, data of a later segment, last tag
    for offset in (10, 20, header + 5, header + SEG + 100, len(pristine) - 1):
        blob_backend.overwrite(store, key, pristine)
        blob_backend.tamper(store, key, offset)
        with pytest.raises(BlobIntegrityError, match="dañado o fue alterado"):
            store.get(key)
    blob_backend.overwrite(store, key, pristine)
    blob_backend.tamper(store, key, header - 1)  # the key id names a key that does not exist
    with pytest.raises(UnknownKey):
        store.get(key)


def test_truncation_reordering_and_swapping_are_detected(store, blob_backend):
    data = os.urandom(3 * SEGMENT_SIZE + 10)
    key = store.put(data)
    pristine = blob_backend.raw(store, key)
    header = len(pristine) - 3 * SEG - (10 + encryption.TAG)
    # Cut at a segment boundary: the remaining last segment was not written as the final one.
    blob_backend.overwrite(store, key, pristine[: header + 2 * SEG])
    with pytest.raises(BlobIntegrityError):
        store.get(key)
    with pytest.raises(BlobIntegrityError):
        store.get(key, 0, 4 * SEGMENT_SIZE)
    # Segments swapped.
    body = pristine[header:]
    blob_backend.overwrite(store, key, pristine[:header] + body[SEG : 2 * SEG] + body[:SEG] + body[2 * SEG :])
    with pytest.raises(BlobIntegrityError):
        store.get(key, 0, 10)
    # Another blob's (valid) file under this key: bound to its own content address.
    other = store.put(os.urandom(100))
    blob_backend.overwrite(store, key, blob_backend.raw(store, other))
    with pytest.raises(BlobIntegrityError):
        store.get(key)


def test_plaintext_blobs_from_before_encryption_stay_readable(blob_backend):
    plain = blob_backend.new()
    old = plain.put(b"radiografia sin cifrar")
    lookalike = plain.put(MAGIC + b"\x01" + os.urandom(80))  # starts like a header by chance
    encrypted = blob_backend.same(plain, keyring("k1"))
    assert encrypted.get(old) == b"radiografia sin cifrar" and encrypted.get(old, 0, 10) == b"radiografi"
    assert encrypted.get(lookalike) == plain.get(lookalike)
    assert encrypted.key_id_of(old) is None
    new = encrypted.put(b"nuevo")
    with pytest.raises(UnknownKey, match="no hay llaves configuradas"):
        plain.get(new)


def test_unknown_key_id_is_refused(blob_backend):
    store = blob_backend.new(keyring("viejo"))
    key = store.put(b"x" * 100)
    with pytest.raises(UnknownKey, match="viejo"):
        blob_backend.same(store, keyring("nuevo")).get(key)


def test_rotation_reencrypts_everything_and_is_resumable(blob_backend):
    old = keyring("2026-06")
    both = Keyring({**old.keys, "2026-12": os.urandom(32)}, "2026-12")
    plain = blob_backend.new()
    legacy = plain.put(b"legado")
    blobs = {blob_backend.same(plain, old).put(os.urandom(n)): n for n in (0, 10, SEGMENT_SIZE + 1)}
    store = blob_backend.same(plain, both)
    contents = {k: store.get(k) for k in [*blobs, legacy]}
    # A damaged blob is reported and left alone; the others rotate.
    broken = blob_backend.same(plain, old).put(os.urandom(500))
    blob_backend.tamper(store, broken, -1)
    report = rotate(store)
    assert report.reencrypted == 4 and report.already_current == 0 and list(report.failed) == [broken]
    assert census(store)["2026-12"] == 4
    again = rotate(store)
    assert again.reencrypted == 0 and again.already_current == 4
    only_new = blob_backend.same(plain, Keyring({"2026-12": both.keys["2026-12"]}, "2026-12"))
    assert {k: only_new.get(k) for k in contents} == contents
    assert not blob_backend.leftovers(store)


def test_keys_from_settings(tmp_path):
    raw = os.urandom(32)
    for text in (raw.hex(), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        ring = load_keyring(Settings(blob_key=text))
        assert ring.current_key == raw and ring.current.startswith("fp-")
    assert load_keyring(Settings()) is None
    for bad in ("corta", "00" * 31, base64.b64encode(os.urandom(16)).decode()):
        with pytest.raises(KeyringError, match="32 bytes"):
            load_keyring(Settings(blob_key=bad))
    with pytest.raises(KeyringError, match="no ambos"):
        load_keyring(Settings(blob_key=raw.hex(), blob_keyring=str(tmp_path / "k.toml")))
    path = tmp_path / "llavero.toml"
    path.write_text('current = "b"\n[keys]\na = "%s"\n' % raw.hex())
    with pytest.raises(KeyringError, match="current"):
        read_keyring_file(path)
    assert parse_key(raw.hex(), "x") == raw


def test_add_key_keeps_old_keys_and_file_is_private(tmp_path):
    path = tmp_path / "llavero.toml"
    first = add_key(path, "2026-06")
    second = add_key(path)
    ring = read_keyring_file(path)
    assert set(ring.keys) == {first, second} and ring.current == second
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(KeyringError, match="ya existe"):
        add_key(path, "2026-06")


def test_cli_rotation_procedure(tmp_path, monkeypatch, blob_backend):
    keyring_file = tmp_path / "llavero.toml"
    settings = blob_backend.settings(tmp_path / "data", blob_keyring=str(keyring_file))
    for name, value in blob_backend.env(settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("EXPEDIENTE_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("EXPEDIENTE_BLOB_KEYRING", str(keyring_file))
    run = lambda *args: CliRunner().invoke(cli, list(args))  # noqa: E731
    assert run("blobs", "add-key", "--id", "2026-06").exit_code == 0
    store = make_blob_store(settings)
    keys = [store.put(os.urandom(n)) for n in (5, 50, 500)]
    r = run("blobs", "add-key", "--id", "2026-12")
    assert r.exit_code == 0 and "rotate-key" in r.output
    r = run("blobs", "rotate-key")
    assert r.exit_code == 0, r.output
    assert orjson.loads(r.stdout.strip().splitlines()[-1]) == {"current_key": "2026-12", "reencrypted": 3, "already_current": 0, "failed": 0}
    r = run("blobs", "status")
    assert "2026-12: 3  (llave actual)" in r.stdout and "2026-06" not in r.stdout and PLAINTEXT not in r.stdout
    assert ("S3" if blob_backend.name == "s3" else "archivos locales") in r.stdout
    assert [make_blob_store(settings).key_id_of(k) for k in keys] == ["2026-12"] * 3
    monkeypatch.setenv("EXPEDIENTE_BLOB_KEY", "no-es-una-llave")
    r = run("blobs", "status")
    assert r.exit_code == 2 and "no ambos" in r.output
