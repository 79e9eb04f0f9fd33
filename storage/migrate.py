"""`python -m storage.migrate`: bring the database named by POSTROOM_MIGRATE_URL to the newest
schema, in a process of its own (a serving node never imports alembic). Exit status 0 on success,
1 with the reason on stdout otherwise.
"""

from __future__ import annotations

import asyncio
import os
import sys

from storage.db import make_engine, upgrade_schema


async def _upgrade(url: str, busy_timeout: float) -> tuple[str | None, str | None]:
    engine = make_engine(url, busy_timeout)
    try:
        return await upgrade_schema(engine)
    finally:
        await engine.dispose()


def main() -> int:
    url = os.environ["POSTROOM_MIGRATE_URL"]
    busy_timeout = float(os.environ.get("POSTROOM_MIGRATE_BUSY_TIMEOUT", "5"))
    try:
        before, after = asyncio.run(_upgrade(url, busy_timeout))
    except Exception as e:
        print(f"schema upgrade failed: {type(e).__name__}: {e}")
        return 1
    print(f"database schema: {before or 'empty'} → {after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
