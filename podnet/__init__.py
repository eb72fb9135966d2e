"""podnet: Kubernetes pod networking, emulated with real processes and real sockets.

`podnet` is the shared kernel: API object helpers and validation, wire formats, settings,
logging setup and the `podnet` command line. `controlplane` and `agents` both import it and
never import each other.
"""

__version__ = "0.1.0"
