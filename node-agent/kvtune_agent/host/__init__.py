"""The one door to the host: its files (hostfs), processes, systemd, boot loader, CPU lists and
the stable names of its devices. Nothing else in the agent reads or writes the host directly, so
every read has a deadline and every write is checked in one place (docs/safety.md)."""
