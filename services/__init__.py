"""Encore's online services: embedder (:8002), retriever (:8001), ranker (:8000)."""
