"""master patient index: person links and the review list

Revision ID: 0009_person_links
Revises: 0008_mpi_index
Create Date: 2026-12-01 23:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0009_person_links'
down_revision = '0008_mpi_index'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('person_link',
    sa.Column('res_type', sa.String(length=40), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('patient_key', sa.String(length=64), nullable=True),
    sa.Column('param', sa.String(length=64), nullable=False),
    sa.Column('linked_key', sa.String(length=64), nullable=False),
    sa.Column('link_type', sa.String(length=16), nullable=False)
    )
    with op.batch_alter_table('person_link', schema=None) as batch_op:
        batch_op.create_index('ix_person_link_patient', ['patient_key', 'linked_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_person_link_res_type_res_id'), ['res_type', 'res_id'], unique=False)
    op.create_table('mpi_review',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('patient_a', sa.String(length=64), nullable=False),
    sa.Column('patient_b', sa.String(length=64), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('grade', sa.String(length=16), nullable=False),
    sa.Column('reasons', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created', sa.DateTime(), nullable=False),
    sa.Column('decided', sa.DateTime(), nullable=True),
    sa.Column('decided_by', sa.String(length=128), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mpi_review')),
    sa.UniqueConstraint('patient_a', 'patient_b', name=op.f('uq_mpi_review_patient_a_patient_b'))
    )
    with op.batch_alter_table('mpi_review', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mpi_review_status_score'), ['status', 'score'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('mpi_review', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_mpi_review_status_score'))
    op.drop_table('mpi_review')
    with op.batch_alter_table('person_link', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_person_link_res_type_res_id'))
        batch_op.drop_index('ix_person_link_patient')
    op.drop_table('person_link')
