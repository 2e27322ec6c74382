"""imaging thumbnails cache

Revision ID: 0011_imaging_thumbnails
Revises: 0010_imaging_index
Create Date: 2026-12-02 16:15:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0011_imaging_thumbnails'
down_revision = '0010_imaging_index'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dicom_thumbnail',
    sa.Column('instance_key', sa.String(length=64), nullable=False),
    sa.Column('frame', sa.Integer(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('media_type', sa.String(length=16), nullable=False),
    sa.Column('blob_key', sa.String(length=64), nullable=False),
    sa.Column('created', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('instance_key', 'frame', 'size', 'media_type', name=op.f('pk_dicom_thumbnail'))
    )


def downgrade() -> None:
    op.drop_table('dicom_thumbnail')
