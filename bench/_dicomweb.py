"""DICOMweb clients for the imaging benchmark (the same client code against both archives).

Plain ``http.client`` over one keep-alive connection, reading into a reused 1 MiB buffer: a
whole-study retrieval moves ~157 MB, and a heavier client (httpx, requests) would measure its
own parsing at several hundred MB/s instead of the server. The answer is checked once per run
(``check_study``: multipart parts, their bytes equal to what was sent), not on timed samples.

- ``Client(base_url, root, token)``: ``root`` is the DICOMweb prefix (``/dicom-web`` for
  Orthanc, ``/dicomweb`` for Expediente); ``token`` a bearer token or None.
- ``study(uid)`` -> (bytes, seconds, first-byte seconds): WADO-RS whole study as
  multipart/related; type="application/dicom"; transfer-syntax=* (as stored).
- ``frame(study, series, sop, 1)`` -> (bytes, seconds): WADO-RS frame 1, octet-stream, as stored.
- ``qido(path, params)`` -> (status, JSON, seconds).
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse

STUDY_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
BUF = 1024 * 1024


class HttpError(RuntimeError):
    pass


class Client:
    def __init__(self, base_url: str, root: str, token: str | None = None, timeout: float = 300):
        parts = urllib.parse.urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port
        self.root = root.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None
        self._buf = bytearray(BUF)

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _request(self, path: str, accept: str):
        conn = self._connection()
        try:
            conn.request("GET", self.root + path, headers={**self.headers, "Accept": accept})
            return conn.getresponse()
        except (http.client.HTTPException, OSError):
            self.close()  # a dropped keep-alive connection: one retry on a fresh one
            conn = self._connection()
            conn.request("GET", self.root + path, headers={**self.headers, "Accept": accept})
            return conn.getresponse()

    def _drain(self, resp, keep: bool) -> tuple[int, bytearray | None, float | None]:
        """Read the whole body; its size, the body if ``keep``, and when the first byte came."""
        view = memoryview(self._buf)
        total, first, body = 0, None, bytearray() if keep else None
        while True:
            n = resp.readinto(view)
            if not n:
                break
            if first is None:
                first = time.perf_counter()
            total += n
            if keep:
                body += view[:n]
        return total, body, first

    def _get(self, path: str, accept: str, keep: bool = False) -> tuple[int, bytearray | None, float, float | None, str]:
        t0 = time.perf_counter()
        resp = self._request(path, accept)
        total, body, first = self._drain(resp, keep)
        elapsed = time.perf_counter() - t0
        if resp.status != 200:
            raise HttpError(f"GET {self.root}{path} -> {resp.status}: {bytes(body or b'')[:300]!r}")
        return total, body, elapsed, (first - t0) if first else None, resp.getheader("Content-Type", "")

    def study(self, uid: str, keep: bool = False):
        return self._get(f"/studies/{uid}", STUDY_ACCEPT, keep)

    def frame(self, study: str, series: str, sop: str, number: int = 1, keep: bool = False):
        return self._get(f"/studies/{study}/series/{series}/instances/{sop}/frames/{number}", FRAME_ACCEPT, keep)

    def qido(self, path: str, params: dict[str, str]) -> tuple[int, list, float]:
        # '*' unescaped: Orthanc does not take %2A as a wildcard (RFC 3986 allows '*' in a query).
        query = urllib.parse.urlencode(params, safe="*")
        t0 = time.perf_counter()
        resp = self._request(f"{path}?{query}", "application/dicom+json")
        raw = resp.read()
        elapsed = time.perf_counter() - t0
        if resp.status == 204 or not raw:
            return resp.status, [], elapsed
        if resp.status != 200:
            raise HttpError(f"GET {self.root}{path}?{query} -> {resp.status}: {raw[:300]!r}")
        return resp.status, json.loads(raw), elapsed


# ------------------------------------------------------------------ checking answers


def boundary_of(content_type: str) -> bytes:
    for part in content_type.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "boundary":
            return value.strip('"').encode()
    raise ValueError(f"no boundary in {content_type!r}")


def multipart_parts(body: bytes, content_type: str) -> list[bytes]:
    """The bodies of a multipart/related answer (headers dropped)."""
    delimiter = b"--" + boundary_of(content_type)
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, sep, payload = chunk.partition(b"\r\n\r\n")
        if not sep:
            continue
        parts.append(payload[:-2] if payload.endswith(b"\r\n") else payload)
    return parts


def check_study(body: bytes, content_type: str, sent: list[bytes]) -> dict:
    """Does a whole-study answer hold exactly the instances sent? Compares by dataset (after the
    file meta group): an archive may rewrite the file meta (Orthanc does), never the dataset."""
    parts = multipart_parts(bytes(body), content_type)
    got = {dataset_of(p) for p in parts}
    want = {dataset_of(b) for b in sent}
    return {"parts": len(parts), "instances_sent": len(sent), "datasets_identical": got == want}


def dataset_of(part10: bytes) -> bytes:
    if part10[128:132] != b"DICM":
        return part10
    # (0002,0000) UL group length right after the preamble: its value says where the meta ends.
    meta_len = int.from_bytes(part10[140:144], "little")
    return part10[144 + meta_len :]
