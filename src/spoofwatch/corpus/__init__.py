"""The corpus builder: source cards in, 16 kHz FLAC clips, manifest, lock file and datasheet out.

``spoofwatch corpus build|check|stats``; docs/corpus.md describes the card schema and outputs.
"""
