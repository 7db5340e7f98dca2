"""The vector index (``vector_index``, with the embedded one in ``edge_index``) and the
embedders that fill it (``embedders``)."""
