"""Network faults (`podnet.dev/v1alpha1` NetworkFault): the pure model (`model`) that says
which faults a flow crosses and what each one does to a datagram or a stream chunk."""

from podnet.faults.model import (
    Endpoint,
    Fault,
    FaultError,
    FaultSet,
    Selector,
    TokenBucket,
    parse_fault,
)

__all__ = ["Endpoint", "Fault", "FaultError", "FaultSet", "Selector", "TokenBucket",
           "parse_fault"]
