"""Datasets: each loader returns splits plus the field configs the feature spec is fit from."""
