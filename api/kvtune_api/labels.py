"""Node labels kvtune sets, read by more than one side (agent, operator, webhook)."""

#: Set by each node's agent: "true" once its host matches its spec. The webhook steers VMIs to
#: nodes that carry it. The agent removes it when the node leaves its profile: a node no profile
#: prepares is neither ready nor unready for one.
READY_LABEL = "kvtune.io/ready"

#: Set by each node's agent, before it writes anything to its host or its Node, while it has a
#: HypervisorNodeState; removed by that agent only once the state is gone and nothing kvtune
#: wrote is left (host journal restored, feature file and ready label withdrawn). The agent
#: DaemonSet runs on nodes with this label as well as on nodes with a profile, so a node that left
#: its profile while its agent was down still gets an agent to restore it when it comes back.
JOURNAL_LABEL = "kvtune.io/journal"
JOURNAL_PENDING = "pending"
