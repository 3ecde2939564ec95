"""What both kopf processes of the operator package use: the operator (`controller/`) and the VMI
admission webhook (`webhook/`). Each is a process of its own and imports nothing of the other;
what they must agree on lives here, and nothing more:

- `profiles`: a profile as both read it, and the `kvtune.io/profile` label the operator puts on
  a profile's nodes and the webhook steers VMIs to;
- `nodestate`: a HypervisorNodeState as both index it, and where its node stands (the webhook
  sends VMIs only to nodes the operator's roll-up counts as Ready);
- `handlers`: the kopf login and the index functions both processes register;
- `kopf_toggles`: the fix to kopf's index readiness gate both processes install;
- `kube`: how both build their Kubernetes client.
"""
