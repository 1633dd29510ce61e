"""Shared core of the ESCI pipeline: config, artifacts, metrics, leaderboard and submissions.

Stage code lives in the top-level stage folders (data/, baseline/, pretrain/, finetune/,
ensemble/); this package holds only what every stage shares.
"""
