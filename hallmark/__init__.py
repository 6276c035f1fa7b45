"""Hallmark's pure SPIFFE core, shared by the control plane and the agent."""

from hallmark.errors import HallmarkError
from hallmark.spiffeid import SpiffeId, TrustDomain

__all__ = ["HallmarkError", "SpiffeId", "TrustDomain"]
