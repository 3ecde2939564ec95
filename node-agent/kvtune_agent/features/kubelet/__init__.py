"""The kubelet feature."""
