"""Small, valid DICOM instances for tests: a CT slice with the patient and study attributes a
test wants, as Part-10 bytes (explicit VR little endian, 64x64 16-bit pixels)."""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def ct_slice(
    *,
    patient_id: str = "MRN-0001",
    issuer: str = "",
    other_ids: tuple[tuple[str, str], ...] = (),
    name: str = "Hernández Cruz^María Guadalupe",
    birth: str = "19791203",
    sex: str = "F",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    accession: str = "",
    study_date: str = "20261115",
    modality: str = "CT",
    number: int = 1,
    size: int = 64,
    procedure_codes: tuple[tuple[str, str, str], ...] = (),
    requests: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """``procedure_codes``: (code, scheme, meaning) items of ProcedureCodeSequence;
    ``requests``: (RequestedProcedureID, ScheduledProcedureStepID) items of
    RequestAttributesSequence."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientID = patient_id
    if issuer:
        ds.IssuerOfPatientID = issuer
    if other_ids:
        ds.OtherPatientIDsSequence = Sequence([_other_id(v, i) for v, i in other_ids])
    ds.PatientName = name
    ds.PatientBirthDate = birth
    ds.PatientSex = sex
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.AccessionNumber = accession
    ds.StudyID = "1"
    ds.StudyDescription = "TAC de tórax"
    ds.Modality = modality
    if procedure_codes:
        ds.ProcedureCodeSequence = Sequence([_code(*c) for c in procedure_codes])
    if requests:
        ds.RequestAttributesSequence = Sequence([_request(*r) for r in requests])
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    y, x = np.mgrid[:size, :size]
    body = ((x - size / 2) ** 2 + (y - size / 2) ** 2 < (size / 3) ** 2) * 1000 + number
    ds.PixelData = body.astype(np.uint16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _other_id(value: str, issuer: str) -> Dataset:
    item = Dataset()
    item.PatientID = value
    if issuer:
        item.IssuerOfPatientID = issuer
    return item


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _request(procedure_id: str, step_id: str) -> Dataset:
    item = Dataset()
    item.RequestedProcedureID, item.ScheduledProcedureStepID = procedure_id, step_id
    return item
