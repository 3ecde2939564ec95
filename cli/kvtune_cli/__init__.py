"""The `kvtune` command line: probe, agent, operator, demo, crds."""
