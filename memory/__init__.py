"""Storage: one folder per store (``sqlite/``) behind the protocols of ``interface``,
beside what the stores share: opening by location, the retry policy, the row mapping,
the vector index and the default embedder."""
