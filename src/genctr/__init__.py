"""genctr: generative-pretrained CTR models and their MLOps workflow."""
__version__ = "0.1.0"
