"""Our hand-written PDU and DIMSE codecs against pynetdicom's as the oracle."""

from __future__ import annotations

from hypothesis import given, settings as hsettings, strategies as st
from pynetdicom.dimse_messages import C_FIND_RSP, C_MOVE_RSP, C_STORE_RQ
from pynetdicom.dimse_primitives import C_FIND, C_MOVE, C_STORE
from pynetdicom.dsutils import encode as ds_encode
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ, P_DATA_TF

from expediente.dicom.net import dimse, pdu

uid = st.lists(st.integers(0, 99999), min_size=2, max_size=10).map(lambda parts: "1." + ".".join(map(str, parts))).filter(lambda u: len(u) <= 64)
ae = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_", min_size=1, max_size=16)


def _oracle_command(message) -> bytes:
    return ds_encode(message.command_set, True, True)


@given(message_id=st.integers(1, 65535), sop_class=uid, sop_uid=uid, priority=st.sampled_from([0, 1, 2]))
@hsettings(max_examples=30, deadline=None)
def test_c_store_rq_encodes_like_pynetdicom(message_id, sop_class, sop_uid, priority):
    primitive = C_STORE()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = sop_class
    primitive.AffectedSOPInstanceUID = sop_uid
    primitive.Priority = priority
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    oracle = _oracle_command(message)
    ours = dimse.encode(
        {
            dimse.COMMAND_FIELD: dimse.C_STORE_RQ,
            dimse.MESSAGE_ID: message_id,
            dimse.AFFECTED_SOP_CLASS: sop_class,
            dimse.AFFECTED_SOP_INSTANCE: sop_uid,
            dimse.PRIORITY: priority,
            dimse.DATASET_TYPE: dimse.NO_DATASET,  # the primitive carries no data set here
        }
    )
    assert ours == oracle
    decoded = dimse.decode(oracle)
    assert (decoded[dimse.MESSAGE_ID], decoded[dimse.AFFECTED_SOP_CLASS], decoded[dimse.AFFECTED_SOP_INSTANCE]) == (message_id, sop_class, sop_uid)


@given(
    responded=st.integers(1, 65535),
    status=st.sampled_from([0x0000, 0xFF00, 0xB000, 0xA801, 0xC000]),
    counts=st.tuples(*[st.integers(0, 65535)] * 4),
    comment=st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", min_size=0, max_size=60),
)
@hsettings(max_examples=30, deadline=None)
def test_c_move_rsp_decodes_like_pynetdicom(responded, status, counts, comment):
    primitive = C_MOVE()
    primitive.MessageIDBeingRespondedTo = responded
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.2"
    primitive.Status = status
    primitive.NumberOfRemainingSuboperations, primitive.NumberOfCompletedSuboperations, primitive.NumberOfFailedSuboperations, primitive.NumberOfWarningSuboperations = counts
    if comment.strip():
        primitive.ErrorComment = comment.strip()
    message = C_MOVE_RSP()
    message.primitive_to_message(primitive)
    oracle = _oracle_command(message)
    decoded = dimse.decode(oracle)
    assert decoded[dimse.STATUS] == status and decoded[dimse.RESPONDED_TO] == responded
    assert (decoded[dimse.REMAINING], decoded[dimse.COMPLETED], decoded[dimse.FAILED], decoded[dimse.WARNING]) == counts
    ours = dimse.encode({k: v for k, v in decoded.items()})
    assert dimse.decode(ours) == decoded
    assert ours == oracle


def test_c_find_rsp_with_dataset_matches_pynetdicom():
    primitive = C_FIND()
    primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    primitive.Status = 0xFF00
    from io import BytesIO

    primitive.Identifier = BytesIO(b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ")
    message = C_FIND_RSP()
    message.primitive_to_message(primitive)
    rsp = dimse.response({dimse.MESSAGE_ID: 7, dimse.AFFECTED_SOP_CLASS: "1.2.840.10008.5.1.4.1.2.2.1"}, dimse.C_FIND_RSP, 0xFF00, dataset=True)
    decoded = dimse.decode(_oracle_command(message))
    assert decoded[dimse.DATASET_TYPE] != dimse.NO_DATASET and rsp[dimse.DATASET_TYPE] != dimse.NO_DATASET
    assert {k: v for k, v in dimse.decode(dimse.encode(rsp)).items() if k != dimse.DATASET_TYPE} == {k: v for k, v in decoded.items() if k != dimse.DATASET_TYPE}


@given(called=ae, calling=ae, max_pdu=st.integers(0, 2**32 - 1), contexts=st.lists(st.tuples(uid, st.lists(uid, min_size=1, max_size=4)), min_size=1, max_size=8), role=st.tuples(st.booleans(), st.booleans()))
@hsettings(max_examples=30, deadline=None)
def test_associate_rq_round_trips_through_pynetdicom(called, calling, max_pdu, contexts, role):
    rq = pdu.AssociateRq(called=called, calling=calling, max_pdu=max_pdu, implementation_uid="1.2.3.4", implementation_version="V1")
    rq.contexts = [pdu.Context(2 * i + 1, a, ts) for i, (a, ts) in enumerate(contexts)]
    rq.roles = [pdu.Role(contexts[0][0], *role)]
    raw = pdu.encode_associate(rq, accept=False)
    oracle = A_ASSOCIATE_RQ()
    oracle.decode(raw)
    assert oracle.called_ae_title.strip() == called and oracle.calling_ae_title.strip() == calling
    assert [(c.context_id, str(c.abstract_syntax), [str(t) for t in c.transfer_syntax]) for c in oracle.presentation_context] == [
        (c.id, c.abstract_syntax, c.transfer_syntaxes) for c in rq.contexts
    ]
    again = pdu.decode_associate(memoryview(oracle.encode())[6:])
    assert (again.called, again.calling, again.max_pdu, again.implementation_uid) == (called, calling, max_pdu, "1.2.3.4")
    assert [(c.id, c.abstract_syntax, c.transfer_syntaxes) for c in again.contexts] == [(c.id, c.abstract_syntax, c.transfer_syntaxes) for c in rq.contexts]
    assert [(r.sop_class, r.scu, r.scp) for r in again.roles] == [(contexts[0][0], *role)]


def test_associate_ac_decodes_in_pynetdicom():
    ac = pdu.AssociateRq(called="EXPEDIENTE", calling="MODALIDAD", max_pdu=4 << 20, implementation_uid="1.2.3.4")
    ac.contexts = [pdu.Context(1, "", ["1.2.840.10008.1.2.1"], 0), pdu.Context(3, "", [], 3)]
    oracle = A_ASSOCIATE_AC()
    oracle.decode(pdu.encode_associate(ac, accept=True))
    results = [(c.context_id, c.result, str(c.transfer_syntax) if c.transfer_syntax else None) for c in oracle.presentation_context]
    assert results[0] == (1, 0, "1.2.840.10008.1.2.1") and results[1][:2] == (3, 3)
    assert oracle.user_information.maximum_length == 4 << 20 if hasattr(oracle.user_information, "maximum_length") else True


@given(ctx=st.integers(1, 255).filter(lambda n: n % 2), command=st.booleans(), last=st.booleans(), data=st.binary(min_size=0, max_size=3000))
@hsettings(max_examples=40, deadline=None)
def test_p_data_matches_pynetdicom(ctx, command, last, data):
    raw = pdu.p_data(ctx, command, last, data)
    oracle = P_DATA_TF()
    oracle.decode(raw)
    ((oracle_ctx, oracle_data),) = oracle.presentation_data_value_items and [(i.presentation_context_id, i.presentation_data_value) for i in oracle.presentation_data_value_items]
    assert oracle_ctx == ctx and oracle_data[0] == (int(command) | (2 if last else 0)) and oracle_data[1:] == data
    assert raw == oracle.encode()
    ((c, is_command, is_last, view),) = list(pdu.pdvs(memoryview(raw)[6:]))
    assert (c, is_command, is_last, bytes(view)) == (ctx, command, last, data)
