"""Retriever-specific Prometheus metrics, registered on the app's own registry next to the HTTP ones."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from services.retriever.search import Retriever


@dataclass(frozen=True)
class RetrieverMetrics:
    candidates: Counter  # by source: how often users fall back to popularity
    reloads: Counter  # by outcome: a refused bundle must be visible on a dashboard
    items: Counter  # POST /items and store pick-ups, by status

    @classmethod
    def register(cls, registry: CollectorRegistry, retriever: Retriever) -> RetrieverMetrics:
        cold = Gauge("encore_retriever_cold_items", "Cold tracks retrievable through projection", registry=registry)
        cold.set_function(lambda: len(retriever.index.cold) if retriever.loaded else 0)
        return cls(
            candidates=Counter("encore_retriever_candidates", "Candidate lists served", ["source"], registry=registry),
            reloads=Counter("encore_retriever_reloads", "Bundle reload attempts", ["outcome"], registry=registry),
            items=Counter("encore_retriever_items", "New tracks offered to the index", ["status"], registry=registry),
        )
