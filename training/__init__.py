"""Offline side of Encore: datasets, models, trainer, export and the benchmark entry point."""
