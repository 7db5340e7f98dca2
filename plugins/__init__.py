"""Behaviour that plugs into the pipeline: terminals, the indexer, the embedder."""
