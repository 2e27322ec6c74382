"""multipart/related for DICOMweb tests: build a STOW-RS body, split a WADO-RS answer (written
here independently of the server's own reader and writer)."""

from __future__ import annotations

import io
import warnings

import pydicom

BOUNDARY = "expediente-prueba-7d1c"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def stow_body(*parts: bytes, content_type: str = "application/dicom") -> bytes:
    out = bytearray()
    for part in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: {content_type}\r\n\r\n".encode() + part + b"\r\n"
    return bytes(out + f"--{BOUNDARY}--\r\n".encode())


def stow(client, headers: dict, *parts: bytes, study: str | None = None):
    url = "/dicomweb/studies" + (f"/{study}" if study else "")
    return client.post(url, content=stow_body(*parts), headers={**headers, "Content-Type": STOW_TYPE})


def split_parts(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """(headers, content) of each part of a multipart/related answer."""
    params = dict(p.strip().split("=", 1) for p in content_type.split(";")[1:])
    boundary = params["boundary"].strip('"').encode()
    assert content_type.split(";")[0].strip() == "multipart/related", content_type
    pieces = body.split(b"--" + boundary)
    assert pieces[-1].strip() == b"--", "the answer must end with the closing delimiter"
    out = []
    for piece in pieces[1:-1]:
        assert piece.startswith(b"\r\n")
        head, _, content = piece[2:].partition(b"\r\n\r\n")
        assert content.endswith(b"\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head.decode().split("\r\n"))}
        out.append((headers, content[:-2]))
    return out


def uids(data: bytes) -> tuple[str, str, str, str]:
    """(study, series, instance, SOP class) of a Part-10 file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), str(ds.SOPClassUID)


def instance_url(data: bytes) -> str:
    study, series, sop, _ = uids(data)
    return f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"


def seq(doc: dict, tag: str) -> list[dict]:
    return doc.get(tag, {}).get("Value", [])


def value(item: dict, tag: str):
    return (item.get(tag, {}).get("Value") or [None])[0]
