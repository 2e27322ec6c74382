"""merge the imaging thumbnails and study name words revisions (both follow 0010)

Revision ID: 0012_merge_imaging_heads
Revises: 0011_imaging_thumbnails, 0011_study_name_tokens
Create Date: 2026-12-02 16:20:00
"""

revision = '0012_merge_imaging_heads'
down_revision = ('0011_imaging_thumbnails', '0011_study_name_tokens')
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
