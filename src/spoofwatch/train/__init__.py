"""spoofwatch.train."""
