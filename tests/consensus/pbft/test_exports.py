"""The package exports exactly what other packages use (httpx's test_exported_members)."""

from __future__ import annotations

import dwcp.consensus.pbft as pbft
from dwcp.consensus.core import Codec, Vote
from dwcp.consensus.pbft.messages import PBFT_MESSAGES


def test_exported_members():
    assert sorted(pbft.__all__) == ["Config", "MESSAGES", "Mode", "Replica"]
    assert all(hasattr(pbft, name) for name in pbft.__all__)


def test_messages_cover_the_codec_union():
    assert set(PBFT_MESSAGES) <= set(pbft.MESSAGES) and Vote in pbft.MESSAGES
    assert set(Codec(pbft.MESSAGES).types) == set(pbft.MESSAGES)
