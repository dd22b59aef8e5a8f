"""Alarm evidence: each stream's recent audio, and clips of it saved around alarms."""
