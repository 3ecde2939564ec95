"""The block feature."""
