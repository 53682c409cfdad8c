"""Narwhal (DAG mempool) with Bullshark ordering.

`ordering.Bullshark` is the commit rule over certificates (sans-IO); `messages` the wire types.
"""

from dwcp.consensus.bullshark.messages import BULLSHARK_MESSAGES, BatchRef, DagCertificate, Header
from dwcp.consensus.bullshark.ordering import Bullshark, CommittedSubDag, LeaderSchedule

__all__ = ["BULLSHARK_MESSAGES", "BatchRef", "Bullshark", "CommittedSubDag", "DagCertificate", "Header",
           "LeaderSchedule"]
