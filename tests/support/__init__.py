"""What the tests run on: a PostgreSQL server of their own, the agent processes of the
fault tests, and a fault-injecting SQLite VFS."""
