"""The vocabulary every stage speaks: anomaly codes, verdicts and failure strings, defined once."""
