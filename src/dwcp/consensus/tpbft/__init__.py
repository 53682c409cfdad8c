"""T-PBFT: PBFT whose voters are a consensus group chosen each epoch by EigenTrust (docs/tpbft.md)."""

from dwcp.consensus.tpbft.trust import Opinions, TrustTable

__all__ = ["Opinions", "TrustTable"]
