"""The synthetic subscription business and its simulated customers, for ``retain demo``."""
