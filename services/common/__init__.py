"""Pieces every service shares: settings base, health and metrics routes, API-key check."""
