"""spoofwatch.stream.core."""
