"""T-PBFT's own messages: signed trust reports, and the block meta that carries them.

A `TrustReport` is sent as a message, so its envelope signature is the reporter's signature over
`encode(report)`; a primary copies reports with those signatures into a block's `meta`
(`TrustMeta`), and anyone can check them without trusting the primary, which can leave reports
out but cannot forge or alter one.
"""

from __future__ import annotations

import msgspec

from dwcp.consensus.core.codec import encode, signing_bytes
from dwcp.consensus.core.committee import Committee
from dwcp.consensus.core.crypto import Verifier
from dwcp.consensus.core.messages import Message
from dwcp.consensus.tpbft.trust import MAX_COUNT


class TrustReport(Message, tag="trust"):
    """The sender's cumulative opinion counters (see trust.py) as of the middle of `epoch`:
    `peers` strictly increasing, never the sender, with one `sat` and `unsat` count each."""

    epoch: int
    peers: tuple[int, ...]
    sat: tuple[int, ...]
    unsat: tuple[int, ...]


class SignedReport(msgspec.Struct, frozen=True, array_like=True):
    reporter: int
    signature: bytes
    report: TrustReport


class TrustMeta(msgspec.Struct, frozen=True, array_like=True):
    """`Block.meta` of a T-PBFT block: trust reports, reporters strictly increasing."""

    reports: tuple[SignedReport, ...]


_meta_decoder = msgspec.msgpack.Decoder(TrustMeta)


def encode_meta(reports: tuple[SignedReport, ...]) -> bytes:
    return encode(TrustMeta(reports=reports)) if reports else b""


def decode_meta(meta: bytes) -> TrustMeta | None:
    """The meta's reports, or None when it is not a well-typed `TrustMeta`."""
    try:
        return _meta_decoder.decode(meta)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def check_report(committee: Committee, reporter: int, report: TrustReport) -> str | None:
    """Stateless shape checks of a report (the same answer on every node); None when well-formed."""
    if reporter not in committee:
        return "unknown_reporter"
    k = len(report.peers)
    if report.epoch < 0 or k >= committee.n or len(report.sat) != k or len(report.unsat) != k:
        return "bad_report"
    if any(p not in committee or p == reporter for p in report.peers):
        return "bad_report"
    if any(a >= b for a, b in zip(report.peers, report.peers[1:], strict=False)):
        return "bad_report"
    if any(not 0 <= c <= MAX_COUNT for c in (*report.sat, *report.unsat)):
        return "bad_report"
    return None


def report_signed(verifier: Verifier, signed: SignedReport) -> bool:
    return verifier.verify(signed.reporter, signing_bytes(signed.reporter, encode(signed.report)), signed.signature)


TPBFT_MESSAGES: tuple[type, ...] = (TrustReport,)
