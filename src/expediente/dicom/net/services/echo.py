"""C-ECHO (Verification SOP class)."""

from expediente.dicom.net import dimse
from expediente.dicom.status import SUCCESS


def c_echo(session, ctx: int, command: dict) -> None:
    session.link.send(ctx, dimse.response(command, dimse.C_ECHO_RSP, SUCCESS))
