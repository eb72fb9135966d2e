"""Wire protocols spoken with outside clients, without I/O: SPDY/3.1 (kubectl port-forward)."""
