"""The imaging archive: DIMSE and DICOMweb in front of one ingest pipeline and one index."""
