"""Encore core library: shared by training and the services; torch-free at import time."""
