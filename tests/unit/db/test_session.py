"""Engine construction and URL masking, without connecting anywhere."""

from __future__ import annotations

import pytest
from sqlalchemy.pool import QueuePool

from app.db.session import create_engine, mask_url


class TestMaskUrl:
    def test_hides_the_password(self):
        masked = mask_url("postgresql+asyncpg://keypool:s3cret@db:5432/keypool")

        assert masked == "postgresql+asyncpg://keypool:***@db:5432/keypool"


class TestCreateEngine:
    async def test_postgres_engine_fails_fast_and_pings_connections(self):
        engine = create_engine("postgresql+asyncpg://u:p@db.invalid:5432/x")

        pool = engine.sync_engine.pool
        assert isinstance(pool, QueuePool)
        assert pool.size() == 10
        assert pool._pre_ping
        await engine.dispose()

    @pytest.mark.parametrize(
        "url", ["sqlite+aiosqlite:///./keypool.db", "sqlite+aiosqlite:///:memory:"]
    )
    async def test_sqlite_urls_build_engines(self, url: str):
        engine = create_engine(url)

        assert engine.dialect.name == "sqlite"
        await engine.dispose()
