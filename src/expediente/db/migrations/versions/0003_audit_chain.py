"""audit: hash chain, returned entities, purpose of use

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 21:40:00.000000
"""

from alembic import op
import sqlalchemy as sa

from expediente.security.audit_chain import CHAIN_VERSION, GENESIS, entry_hash


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_BATCH = 5000


def upgrade() -> None:
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('entities', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('purpose', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('chain_version', sa.SmallInteger(), nullable=True))
        batch_op.add_column(sa.Column('hash', sa.String(length=64), nullable=True))

    head_seq, head_hash = _chain_existing_entries(op.get_bind())

    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.alter_column('chain_version', existing_type=sa.SmallInteger(), nullable=False)
        batch_op.alter_column('hash', existing_type=sa.String(length=64), nullable=False)
        batch_op.drop_index(batch_op.f('ix_audit_log_patient_key_recorded'))
        batch_op.drop_index(batch_op.f('ix_audit_log_actor_recorded'))
        batch_op.create_index(batch_op.f('ix_audit_log_patient_key_seq'), ['patient_key', 'seq'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_log_actor_seq'), ['actor', 'seq'], unique=False)
    # After the batch block: SQLite's table copy would not keep a partial index's condition.
    op.create_index(
        'ix_audit_log_purpose_seq', 'audit_log', ['purpose', 'seq'], unique=False,
        postgresql_where=sa.text('purpose IS NOT NULL'), sqlite_where=sa.text('purpose IS NOT NULL'),
    )

    head = op.create_table('audit_chain_head',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.Column('last_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_chain_head'))
    )
    op.bulk_insert(head, [{'id': 1, 'last_seq': head_seq, 'last_hash': head_hash}])


def _chain_existing_entries(conn: sa.Connection) -> tuple[int, str]:
    """Chain the entries written before the chain existed, in seq order. Their seqs are made
    contiguous (PostgreSQL sequences leave gaps on rollback; verify reads a gap as a deletion);
    no AuditEvent id was published before this revision, so renumbering breaks no reference."""
    log = sa.table(
        'audit_log', sa.column('recorded', sa.DateTime()), *(sa.column(c) for c in (
            'seq', 'actor', 'role', 'action', 'res_type', 'res_id', 'patient_key', 'outcome',
            'reason', 'source', 'entities', 'purpose', 'chain_version', 'hash'))
    )
    update = (
        log.update().where(log.c.seq == sa.bindparam('old_seq'))
        .values(seq=sa.bindparam('new_seq'), chain_version=sa.bindparam('v'), hash=sa.bindparam('h'))
    )
    previous, numbered, after = GENESIS, 0, 0
    while True:
        rows = conn.execute(sa.select(log).where(log.c.seq > after).order_by(log.c.seq).limit(_BATCH)).mappings().all()
        if not rows:
            return numbered, previous
        params = []
        for row in rows:
            numbered += 1
            previous = entry_hash(previous, {**row, 'seq': numbered})
            params.append({'old_seq': row['seq'], 'new_seq': numbered, 'v': CHAIN_VERSION, 'h': previous})
        for p in params:  # ascending: each new seq is free (new <= old, earlier rows already moved)
            conn.execute(update, p)
        after = rows[-1]['seq']


def downgrade() -> None:
    op.drop_table('audit_chain_head')
    op.drop_index('ix_audit_log_purpose_seq', table_name='audit_log')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_actor_seq'))
        batch_op.drop_index(batch_op.f('ix_audit_log_patient_key_seq'))
        batch_op.create_index(batch_op.f('ix_audit_log_actor_recorded'), ['actor', 'recorded'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_log_patient_key_recorded'), ['patient_key', 'recorded'], unique=False)
        batch_op.drop_column('hash')
        batch_op.drop_column('chain_version')
        batch_op.drop_column('purpose')
        batch_op.drop_column('entities')
