"""Narwhal (DAG mempool) with Bullshark ordering, as sans-IO pieces.

`Primary` is the node's core (headers, votes, certificates, ordering, commits); `ordering.Bullshark`
the commit rule; `worker` the data plane's batch maker and quorum waiter (run by
`transport/dataplane.py`). `MESSAGES` is the primary's wire vocabulary for the codec.
"""

from dwcp.consensus.bullshark.messages import BULLSHARK_MESSAGES, BatchRef, DagCertificate, Header
from dwcp.consensus.bullshark.ordering import Bullshark, CommittedSubDag, LeaderSchedule
from dwcp.consensus.bullshark.primary import Config, Primary
from dwcp.consensus.core.messages import CORE_MESSAGES

MESSAGES: tuple[type, ...] = (*BULLSHARK_MESSAGES, *CORE_MESSAGES)

__all__ = ["BULLSHARK_MESSAGES", "MESSAGES", "BatchRef", "Bullshark", "CommittedSubDag", "Config", "DagCertificate",
           "Header", "LeaderSchedule", "Primary"]
