"""spoofwatch.audio."""
