"""Analyst feedback: keep recent windows' features, record verdicts (docs/learning.md)."""
