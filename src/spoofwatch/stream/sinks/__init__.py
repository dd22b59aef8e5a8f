"""spoofwatch.stream.sinks."""
