"""Pieces every service shares: the app skeleton, errors, request limits, health and metrics, API-key check.

Their settings (`ServiceSettings`) live in encore/settings.py with every other setting.
"""
