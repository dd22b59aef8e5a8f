"""spoofwatch.ops."""
