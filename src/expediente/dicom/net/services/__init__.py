"""DIMSE services: one module per service, a handler per request command field."""

from expediente.dicom.net import dimse
from expediente.dicom.net.services.echo import c_echo
from expediente.dicom.net.services.find import c_find
from expediente.dicom.net.services.retrieve import c_get, c_move
from expediente.dicom.net.services.store import c_store

HANDLERS = {
    dimse.C_ECHO_RQ: c_echo,
    dimse.C_STORE_RQ: c_store,
    dimse.C_FIND_RQ: c_find,
    dimse.C_MOVE_RQ: c_move,
    dimse.C_GET_RQ: c_get,
}
