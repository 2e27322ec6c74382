"""Blob encryption keys: one from a setting, or a keyring file with several keys and one current.

Keyring file (TOML, mode 600)::

    current = "2026-12"

    [keys]
    2026-06 = "base64 or hex of 32 random bytes"
    2026-12 = "..."

New blobs are encrypted under `current`; every key listed can still decrypt. A key leaves the
file only after `expediente blobs rotate-key` reports no blob under it. A single key given in
`blob_key` gets its fingerprint as id, so it can later be moved into a keyring unchanged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path

from expediente.config import Settings

KEY_BYTES = 32  # AES-256
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class KeyringError(ValueError):
    """Keys that cannot be used; the message says which and why (Spanish, for operators)."""


class UnknownKey(KeyringError):
    pass


def parse_key(text: str, where: str) -> bytes:
    """32 bytes from 64 hex digits or base64 (standard or URL-safe alphabet)."""
    value = text.strip()
    raw: bytes | None = None
    if re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raw = bytes.fromhex(value)
    else:
        try:
            raw = base64.b64decode(value.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            raw = None
    if raw is None or len(raw) != KEY_BYTES:
        raise KeyringError(f"{where}: la llave debe ser de 32 bytes en hexadecimal (64 dígitos) o base64 (44 caracteres)")
    return raw


def fingerprint(key: bytes) -> str:
    return "fp-" + hashlib.sha256(b"expediente blob key id\x00" + key).hexdigest()[:16]


def new_key_text() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


@dataclass(frozen=True)
class Keyring:
    keys: dict[str, bytes]
    current: str

    def key(self, key_id: str) -> bytes:
        try:
            return self.keys[key_id]
        except KeyError:
            raise UnknownKey(f"el blob está cifrado con la llave {key_id!r}, que no está en el llavero") from None

    @property
    def current_key(self) -> bytes:
        return self.keys[self.current]


def read_keyring_file(path: Path) -> Keyring:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise KeyringError(f"no se encuentra el llavero de blobs: {path}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise KeyringError(f"no se puede leer el llavero de blobs {path}: {exc}") from None
    entries = data.get("keys")
    current = data.get("current")
    if not isinstance(entries, dict) or not entries:
        raise KeyringError(f"{path}: falta la tabla [keys] con al menos una llave")
    keys: dict[str, bytes] = {}
    for key_id, text in entries.items():
        if not _KEY_ID.match(key_id) or not isinstance(text, str):
            raise KeyringError(f"{path}: identificador de llave inválido {key_id!r} (letras, dígitos, . _ -; hasta 64)")
        keys[key_id] = parse_key(text, f"{path} [keys] {key_id}")
    if not isinstance(current, str) or current not in keys:
        raise KeyringError(f"{path}: 'current' debe nombrar una de las llaves de [keys]")
    return Keyring(keys, current)


def load_keyring(settings: Settings) -> Keyring | None:
    """The configured keys, or None when blobs are not encrypted."""
    if settings.blob_key and settings.blob_keyring:
        raise KeyringError("configure blob_key o blob_keyring, no ambos")
    if settings.blob_keyring:
        return read_keyring_file(Path(settings.blob_keyring))
    if settings.blob_key:
        key = parse_key(settings.blob_key, "blob_key")
        return Keyring({fingerprint(key): key}, fingerprint(key))
    return None


def add_key(path: Path, key_id: str | None = None) -> str:
    """Add a fresh random key to the keyring file (created if missing) and make it current."""
    keys: dict[str, str] = {}
    if path.exists():
        existing = read_keyring_file(path)
        keys = {k: base64.b64encode(v).decode() for k, v in existing.keys.items()}
    key_text = new_key_text()
    key_id = key_id or fingerprint(base64.b64decode(key_text))
    if not _KEY_ID.match(key_id):
        raise KeyringError(f"identificador de llave inválido {key_id!r} (letras, dígitos, . _ -; hasta 64)")
    if key_id in keys:
        raise KeyringError(f"ya existe la llave {key_id!r} en {path}")
    keys[key_id] = key_text
    body = f'current = "{key_id}"\n\n[keys]\n' + "".join(f'"{k}" = "{v}"\n' for k, v in keys.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return key_id
