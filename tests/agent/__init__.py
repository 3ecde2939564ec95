"""Node agent tests: probes against sysfs-shaped trees built by tests/support/hosttree.py."""
