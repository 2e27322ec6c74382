"""master patient index: per-Patient features and blocking keys

Revision ID: 0008_mpi_index
Revises: 0006_catalogs
Create Date: 2026-12-10 10:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0008_mpi_index'
down_revision = '0006_catalogs'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('mpi_person',
    sa.Column('res_type', sa.String(length=40), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('patient_key', sa.String(length=64), nullable=True),
    sa.Column('param', sa.String(length=64), nullable=False),
    sa.Column('curp', sa.String(length=18), nullable=True),
    sa.Column('curp_other', sa.String(length=40), nullable=True),
    sa.Column('first_surname', sa.String(length=120), nullable=False),
    sa.Column('second_surname', sa.String(length=120), nullable=False),
    sa.Column('given', sa.String(length=200), nullable=False),
    sa.Column('sex', sa.String(length=8), nullable=True),
    sa.Column('birth_date', sa.String(length=10), nullable=True),
    sa.Column('birth_state', sa.String(length=2), nullable=True),
    sa.Column('identifiers', sa.Text(), nullable=True)
    )
    with op.batch_alter_table('mpi_person', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mpi_person_res_type_res_id'), ['res_type', 'res_id'], unique=False)
    op.create_table('mpi_key',
    sa.Column('res_type', sa.String(length=40), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('patient_key', sa.String(length=64), nullable=True),
    sa.Column('param', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False)
    )
    with op.batch_alter_table('mpi_key', schema=None) as batch_op:
        batch_op.create_index('ix_mpi_key_lookup', ['key', 'res_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_mpi_key_res_type_res_id'), ['res_type', 'res_id'], unique=False)
    # Stored Patients have no index rows yet: queue them for the rebuild.
    op.execute(
        "INSERT INTO search_reindex (res_type, requested, reason) "
        "SELECT DISTINCT res_type, CURRENT_TIMESTAMP, 'schema 0008: master patient index' FROM resource "
        "WHERE res_type = 'Patient' AND res_type NOT IN (SELECT res_type FROM search_reindex)"
    )


def downgrade() -> None:
    op.drop_table('mpi_key')
    op.drop_table('mpi_person')
