"""DIMSE status codes the archive answers (PS3.7 Annex C and the service classes of PS3.4)."""

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
SUB_OPERATIONS_FAILED = 0xB000  # C-MOVE/C-GET completed with one or more failures (warning)
OUT_OF_RESOURCES = 0xA700
MOVE_DESTINATION_UNKNOWN = 0xA801
DATASET_MISMATCH = 0xA900  # data set does not match SOP class (or its command)
IDENTIFIER_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
UNABLE_TO_PROCESS = 0xC001
NOT_AUTHORIZED = 0x0124  # refused: not authorized (the AE may not use this service)
SOP_CLASS_NOT_SUPPORTED = 0x0122
