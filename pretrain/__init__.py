"""Multi-task domain pre-training of an encoder on the product catalogue (see pretrain/README.md)."""
