"""spoofwatch.robustness: laundering transforms, a white-box attack and the robustness report."""
