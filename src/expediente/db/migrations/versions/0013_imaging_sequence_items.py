"""imaging: the items of the sequences C-FIND and QIDO-RS match on (dicom_item), filled for
studies indexed before this revision from their instances' stored DICOM JSON

Revision ID: 0013_imaging_sequence_items
Revises: 0012_merge_imaging_heads
Create Date: 2026-12-04 19:10:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0013_imaging_sequence_items'
down_revision = '0012_merge_imaging_heads'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dicom_item',
    sa.Column('owner_uid', sa.String(length=64), nullable=False),
    sa.Column('sequence', sa.String(length=64), nullable=False),
    sa.Column('item', sa.Integer(), nullable=False),
    sa.Column('keyword', sa.String(length=64), nullable=False),
    sa.Column('value', sa.String(length=324).with_variant(sa.String(length=324, collation='C'), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('owner_uid', 'sequence', 'item', 'keyword', name=op.f('pk_dicom_item'))
    )
    op.create_index(op.f('ix_dicom_item_sequence_keyword_value'), 'dicom_item', ['sequence', 'keyword', 'value'], unique=False)
    from expediente.dicom.sequences import backfill

    backfill(op.get_bind())


def downgrade() -> None:
    op.drop_index(op.f('ix_dicom_item_sequence_keyword_value'), table_name='dicom_item')
    op.drop_table('dicom_item')
