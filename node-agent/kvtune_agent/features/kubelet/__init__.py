"""Kubelet: its CPU, memory and topology managers as dedicated CPUs need them, checked, and with
spec.cpu.kubelet written for the kubelet to take (config.py decides, drop_in.py writes)."""
