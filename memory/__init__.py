"""Storage: the apsw connection, the schema, one CRUD function per op, retry and the index."""
