"""Kubeflow pipelines: pure composition of ``components``; ``python -m pipelines.<name>`` compiles."""
