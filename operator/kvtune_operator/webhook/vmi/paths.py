"""Where in a VirtualMachineInstance the webhook reads and writes: one place for both the
mutation and the validation, which must name the same fields."""

CPU = ("spec", "domain", "cpu")
MEMORY = ("spec", "domain", "memory")
RESOURCES = ("spec", "domain", "resources")
ADDED_OVERHEAD = (*MEMORY, "reservedOverhead", "addedOverhead")
