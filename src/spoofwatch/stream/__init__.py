"""spoofwatch.stream."""
