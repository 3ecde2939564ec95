"""Node labels kvtune sets, read by more than one side (agent, operator, webhook)."""

#: Set by each node's agent: "true" once its host matches its spec. The webhook steers VMIs to
#: nodes that carry it; an agent writes only this label (and only on its own node).
READY_LABEL = "kvtune.io/ready"
