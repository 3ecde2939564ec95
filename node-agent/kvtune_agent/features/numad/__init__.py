"""The numad feature."""
