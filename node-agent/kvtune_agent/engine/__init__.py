"""The feature-blind engine: probe, plan, apply, journal, retry, cycle and status, run over the
features registered in kvtune_agent.features; no module here names a feature or its paths."""
