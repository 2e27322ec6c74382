"""DIMSE service class provider: our own PDU and DIMSE codecs so the C-STORE hot path streams
P-DATA fragments straight into the archive's Receipt (no pydicom, no copies)."""
