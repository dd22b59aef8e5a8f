"""spoofwatch.stream.sources."""
