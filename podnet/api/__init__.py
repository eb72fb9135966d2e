"""API machinery shared by the control plane and the CLI (validation rules by kind, ...)."""
