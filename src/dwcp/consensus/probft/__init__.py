"""ProBFT (probabilistic BFT with VRF-sampled quorums) as a sans-IO core: `Replica(committee=...,
node_id=..., signer=..., verifier=..., vrf=..., vrf_verifier=..., config=Config(...))`.
See docs/probft.md."""

from dwcp.consensus.core.messages import CORE_MESSAGES
from dwcp.consensus.pbft.messages import PBFT_MESSAGES
from dwcp.consensus.probft.messages import PROBFT_MESSAGES
from dwcp.consensus.probft.replica import Config, Replica
from dwcp.consensus.probft.sampling import Params, derive, predict

MESSAGES: tuple[type, ...] = (*PROBFT_MESSAGES, *PBFT_MESSAGES, *CORE_MESSAGES)

__all__ = ["MESSAGES", "Config", "Params", "Replica", "derive", "predict"]
