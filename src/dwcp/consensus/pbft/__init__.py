"""PBFT (Castro & Liskov 1999) as a sans-IO core: `Replica(committee=..., node_id=..., signer=...,
verifier=..., config=Config(...))`, driven through `handle(now, input) -> list[Output]`.

`MESSAGES` is the message union for `core.codec.Codec` (the codec adds the core messages itself;
they are listed here too so the tuple is the complete wire vocabulary of a PBFT node).
"""

from dwcp.consensus.core.messages import CORE_MESSAGES
from dwcp.consensus.pbft.messages import PBFT_MESSAGES
from dwcp.consensus.pbft.replica import Replica
from dwcp.consensus.pbft.state import Config, Mode

MESSAGES: tuple[type, ...] = (*PBFT_MESSAGES, *CORE_MESSAGES)

__all__ = ["MESSAGES", "Config", "Mode", "Replica"]
