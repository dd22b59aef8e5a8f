"""spoofwatch.model.encoders."""
