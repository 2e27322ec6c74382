"""Key rotation: re-encrypt every blob under the keyring's current key.

Each blob is rewritten by an atomic replace, so readers see the old file or the new one,
never a mix, and an interrupted run is resumed by running it again: blobs already under the
current key are skipped. A blob whose content no longer matches its address is left as it is
and reported; rotation never re-encrypts damage.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from expediente.blobs.encryption import BlobIntegrityError
from expediente.blobs.keyring import KeyringError
from expediente.blobs.base import BlobStore

PLAINTEXT = "(sin cifrar)"


@dataclass
class RotationReport:
    reencrypted: int = 0
    already_current: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # blob key -> reason


def census(store: BlobStore) -> Counter:
    """How many blobs each key id protects (PLAINTEXT for unencrypted ones)."""
    counts: Counter = Counter()
    for key in store.keys():
        try:
            counts[store.key_id_of(key) or PLAINTEXT] += 1
        except (BlobIntegrityError, KeyringError) as exc:
            counts[f"(error: {type(exc).__name__})"] += 1
    return counts


def rotate(store: BlobStore, progress: Callable[[], None] | None = None) -> RotationReport:
    if store.keyring is None:
        raise KeyringError("no hay llaves configuradas (blob_key o blob_keyring): nada con qué cifrar")
    report = RotationReport()
    current = store.keyring.current
    for key in store.keys():
        try:
            if store.key_id_of(key) == current:
                report.already_current += 1
            else:
                store.reencrypt(key)
                report.reencrypted += 1
        except (BlobIntegrityError, KeyringError, OSError) as exc:
            report.failed[key] = str(exc)
        if progress is not None:
            progress()
    return report
