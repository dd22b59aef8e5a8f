"""spoofwatch.stream.net."""
