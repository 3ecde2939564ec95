"""The network feature."""
