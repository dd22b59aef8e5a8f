"""spoofwatch.stream.protocols."""
