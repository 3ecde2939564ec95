"""Node labels kvtune sets, read by more than one side (agent, operator, webhook)."""

#: Set by each node's agent: "true" once its host matches its spec. The webhook steers VMIs to
#: nodes that carry it. The agent removes it when the node leaves its profile: a node no profile
#: prepares is neither ready nor unready for one.
READY_LABEL = "kvtune.io/ready"
