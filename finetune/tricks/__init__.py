"""Fine-tuning tricks, each a small unit the one training loop calls when the config says so."""
