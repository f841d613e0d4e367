"""Device-resident batching, training loops, checkpoints and model artifacts."""
