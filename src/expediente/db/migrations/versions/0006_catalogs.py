"""catalogs: code systems and their concepts (terminology)

Revision ID: 0006_catalogs
Revises: 0005
Create Date: 2026-12-08 10:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0006_catalogs'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('code_system',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('url', sa.String(length=255), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('title', sa.String(length=255), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=True),
    sa.Column('complete', sa.Boolean(), nullable=False),
    sa.Column('origin', sa.String(length=8), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('concept_count', sa.Integer(), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('loaded', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_code_system')),
    sa.UniqueConstraint('url', name=op.f('uq_code_system_url'))
    )
    op.create_table('code_concept',
    sa.Column('system_id', sa.String(length=64), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('display', sa.Text(), nullable=False),
    sa.Column('sex', sa.String(length=6), nullable=True),
    sa.Column('age_low', sa.String(length=8), nullable=True),
    sa.Column('age_high', sa.String(length=8), nullable=True),
    sa.Column('properties', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('system_id', 'code', name=op.f('pk_code_concept'))
    )


def downgrade() -> None:
    op.drop_table('code_concept')
    op.drop_table('code_system')
