"""The control plane: API server and store, scheduler, IPAM, node lifecycle (and later
Services, DNS and discovery)."""
