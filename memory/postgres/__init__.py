"""The PostgreSQL store: ``PostgresStore(url)`` for ``postgresql://`` locations.

Needs the ``postgres`` extra: ``pip install 'anchorline[postgres]'`` (psycopg 3
and psycopg_pool).
"""

from __future__ import annotations

from .store import PostgresStore, missing

__all__ = ["PostgresStore", "missing"]
