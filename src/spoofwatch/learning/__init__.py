"""spoofwatch.learning: analyst feedback, retraining with a canary gate, promotion, robustness."""
