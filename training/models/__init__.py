"""CTR and recall models on shared layers; `registry` maps names to classes."""
