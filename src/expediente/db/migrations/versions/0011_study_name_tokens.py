"""imaging: words of each study's patient name (fuzzy name search by index)

Revision ID: 0011_study_name_tokens
Revises: 0010_imaging_index
Create Date: 2026-12-02 16:10:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0011_study_name_tokens'
down_revision = '0010_imaging_index'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dicom_study_name',
    sa.Column('token', sa.String(length=64).with_variant(sa.String(length=64, collation='C'), 'postgresql'), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('token', 'study_uid', name=op.f('pk_dicom_study_name'))
    )
    # Studies indexed before this revision get their words too.
    from expediente.dicom.names import name_tokens

    conn = op.get_bind()
    study = sa.table('dicom_study', sa.column('study_uid'), sa.column('patient_name_norm'))
    names = sa.table('dicom_study_name', sa.column('token'), sa.column('study_uid'))
    rows = [{'token': t, 'study_uid': uid} for uid, norm in conn.execute(sa.select(study.c.study_uid, study.c.patient_name_norm)) for t in name_tokens(norm)]
    for start in range(0, len(rows), 10_000):
        conn.execute(names.insert(), rows[start:start + 10_000])


def downgrade() -> None:
    op.drop_table('dicom_study_name')
