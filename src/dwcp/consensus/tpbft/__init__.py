"""T-PBFT: PBFT whose voters are a consensus group that EigenTrust re-chooses every epoch
(docs/tpbft.md). `Replica(committee=..., node_id=..., signer=..., verifier=..., config=Config(...))`,
driven through `handle(now, input) -> list[Output]` like `pbft.Replica`.

`MESSAGES` is the message union for `core.codec.Codec`: PBFT's plus `TrustReport`.
"""

from dwcp.consensus.pbft import MESSAGES as PBFT_MESSAGES
from dwcp.consensus.tpbft.messages import TPBFT_MESSAGES, TrustReport
from dwcp.consensus.tpbft.replica import Config, Replica, default_group_size
from dwcp.consensus.tpbft.trust import Opinions, TrustTable

MESSAGES: tuple[type, ...] = (*PBFT_MESSAGES, *TPBFT_MESSAGES)

__all__ = ["MESSAGES", "Config", "Opinions", "Replica", "TrustReport", "TrustTable", "default_group_size"]
