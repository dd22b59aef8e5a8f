"""spoofwatch.stream.engine."""
