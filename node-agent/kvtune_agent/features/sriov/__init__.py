"""The sriov feature."""
