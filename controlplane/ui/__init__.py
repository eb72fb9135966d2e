"""The live topology page: the hub that gathers the cluster's picture (`hub.py`), its HTTP
handlers under /podnet/ui/ (`web.py`) and the page itself (`static/`, no build step)."""

from controlplane.ui.hub import UiHub
from controlplane.ui.web import UiServer

__all__ = ["UiHub", "UiServer"]
