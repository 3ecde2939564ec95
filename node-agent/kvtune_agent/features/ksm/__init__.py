"""The ksm feature."""
