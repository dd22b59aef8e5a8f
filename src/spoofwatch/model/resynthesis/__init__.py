"""spoofwatch.model.resynthesis."""
