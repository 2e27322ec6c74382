"""DIMSE services: one module per service, a handler per request command field."""

from expediente.dicom.net import dimse
from expediente.dicom.net.services.echo import c_echo
from expediente.dicom.net.services.store import c_store

HANDLERS = {
    dimse.C_ECHO_RQ: c_echo,
    dimse.C_STORE_RQ: c_store,
}
