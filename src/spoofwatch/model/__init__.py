"""spoofwatch.model."""
