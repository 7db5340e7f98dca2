"""The SQLite store: one file, opened through apsw (see :class:`SQLiteStore`)."""
