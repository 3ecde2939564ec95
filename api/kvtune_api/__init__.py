"""The kvtune API models, shared by the operator, the node agent and the CLI."""

#: The version of kvtune (pyproject.toml reads it from here).
__version__ = "0.1.0"
