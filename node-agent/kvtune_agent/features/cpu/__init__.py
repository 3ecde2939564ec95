"""The cpu feature."""
