"""CTR models, one file each; they only wire the shared layers together."""
