"""Retriever service (:8001): candidate tracks for a user from BPR vectors, cold uploads via their content."""
