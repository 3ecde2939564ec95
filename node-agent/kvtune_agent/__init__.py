"""The kvtune node agent: probes its host and (later) moves it toward its HypervisorNodeState."""
