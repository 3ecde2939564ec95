"""Feature modules: each owns what it reads, plans, writes and restores on the host."""
