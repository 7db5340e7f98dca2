"""The vector index (``vector_index``, with the embedded one in ``edge_index``), what keeps
it in step with a store's outbox (``sync``) and the embedders that fill it
(``embedders``)."""
