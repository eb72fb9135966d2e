"""Services as every proxy sees them (pure code, no I/O): the ClusterIP proxy in the control
plane and the agents' NodePort listeners share one index and one endpoint choice."""
