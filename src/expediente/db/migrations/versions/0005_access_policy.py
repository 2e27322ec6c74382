"""access policy: consent directives and care links

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 22:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('consent_directive',
    sa.Column('res_type', sa.String(length=40), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('patient_key', sa.String(length=64), nullable=True),
    sa.Column('param', sa.String(length=64), nullable=False),
    sa.Column('actor_type', sa.String(length=40), nullable=True),
    sa.Column('actor_id', sa.String(length=64), nullable=True),
    sa.Column('label_system', sa.String(length=255), nullable=True),
    sa.Column('label_code', sa.String(length=255), nullable=True),
    sa.Column('period_low', sa.DateTime(), nullable=True),
    sa.Column('period_high', sa.DateTime(), nullable=True)
    )
    with op.batch_alter_table('consent_directive', schema=None) as batch_op:
        batch_op.create_index('ix_consent_directive_patient', ['patient_key', 'label_code'], unique=False)
        batch_op.create_index(batch_op.f('ix_consent_directive_res_type_res_id'), ['res_type', 'res_id'], unique=False)
    op.create_table('care_link',
    sa.Column('res_type', sa.String(length=40), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('patient_key', sa.String(length=64), nullable=True),
    sa.Column('param', sa.String(length=64), nullable=False),
    sa.Column('actor_type', sa.String(length=40), nullable=False),
    sa.Column('actor_id', sa.String(length=64), nullable=False)
    )
    with op.batch_alter_table('care_link', schema=None) as batch_op:
        batch_op.create_index('ix_care_link_actor', ['actor_id', 'actor_type', 'patient_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_care_link_res_type_res_id'), ['res_type', 'res_id'], unique=False)
    # Stored Consents and care resources have no policy rows yet: queue them for the rebuild.
    op.execute(
        "INSERT INTO search_reindex (res_type, requested, reason) "
        "SELECT DISTINCT res_type, CURRENT_TIMESTAMP, 'schema 0005: access policy rows' FROM resource "
        "WHERE res_type IN ('Consent', 'Encounter', 'EpisodeOfCare', 'CareTeam', 'ServiceRequest') "
        "AND res_type NOT IN (SELECT res_type FROM search_reindex)"
    )


def downgrade() -> None:
    op.drop_table('care_link')
    op.drop_table('consent_directive')
