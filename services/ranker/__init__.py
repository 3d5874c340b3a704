"""Ranker service (:8000): candidates from the retriever, features, CTR scores from the bundle's ONNX model."""
