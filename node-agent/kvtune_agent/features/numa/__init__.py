"""The numa feature."""
