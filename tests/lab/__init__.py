"""The censorship lab: a simulated censored network built from real software (see docs/lab.md)."""
