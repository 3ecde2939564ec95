"""The kvtune API models, shared by the operator, the node agent and the CLI."""
