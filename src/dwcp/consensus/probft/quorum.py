"""Samples a node is entitled to, and probabilistic-quorum certificates anyone can check.

`SampleBook` draws our own samples (one VRF proof per epoch, view and phase) and checks peers': a
sender's proof for (epoch, view, phase) is verified once and its sample cached; a different proof
for the same key later is refused without verifying ("proof_mismatch": an honest prover is
deterministic), so a node verifies at most one proof per sender, view and phase, whatever a
Byzantine peer sends. The cache holds the last `CACHE_SIZE` keys.

A ProBFT certificate is the core `Certificate` (so PBFT's view change, storage and catch-up carry it
unchanged) whose `signatures[i]` is an entry: signature (64 B) || holder id (4 B) || header signature
length (1 B: 64, or 0 in certificates
written before re-proposals were signed) || the leader's header signature || VRF proof.
`holder` is the node whose quorum it is: every signer other than the holder must have the holder in
its VRF sample, so the certificate shows q matching ballots that a single node was entitled to
receive, which is exactly what made that node decide. The signature is the signer's envelope
signature over the `Ballot` rebuilt from the certificate and its entry.

Dense mode (sample = everyone, q = 2f + 1: PBFT's quorums) has no samples to prove: ballots carry an
empty proof, commit ballots no header signature either, and a certificate is PBFT-sized: `signatures[i]`
is the signer's 64-byte ballot signature, the first entry followed by the header signature the ballots
carried (prepare ballots; none for commit). Certificates written in the sampled layout before dense mode
dropped those fields still verify (their proofs are not needed: a dense sample holds everyone).
docs/probft.md, "Dense mode without proofs", gives the safety argument.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from dwcp.consensus.core.codec import encode, signing_bytes
from dwcp.consensus.core.committee import Committee
from dwcp.consensus.core.crypto import SIGNATURE_SIZE, Verifier
from dwcp.consensus.core.messages import Certificate
from dwcp.consensus.core.vrf import VrfProver, VrfVerifier
from dwcp.consensus.probft.messages import Ballot, header
from dwcp.consensus.probft.sampling import PHASES, Params, alpha, draw

CACHE_SIZE = 1 << 14
_HOLDER = 4
_FIXED = SIGNATURE_SIZE + _HOLDER + 1  # then the header signature (its length in the last byte), the proof

BAD_PROOF = "bad_vrf_proof"
PROOF_MISMATCH = "proof_mismatch"


DENSE_FIRST = (SIGNATURE_SIZE, 2 * SIGNATURE_SIZE)  # a dense certificate's first entry: signature [+ header sig]


def dense_entries(entries: list[bytes]) -> tuple[bytes, ...]:
    """A dense certificate's entries from tallied ones (each signature || the header signature its ballot
    carried, the same for all): the header signature kept once, after the first signature."""
    return (entries[0], *(e[:SIGNATURE_SIZE] for e in entries[1:])) if entries else ()


def pack_entry(signature: bytes, holder: int, header_signature: bytes, proof: bytes) -> bytes:
    return signature + holder.to_bytes(_HOLDER, "big") + bytes((len(header_signature),)) + header_signature + proof


def unpack_entry(entry: bytes) -> tuple[bytes, int, bytes, bytes] | None:
    """(signature, holder, header signature, proof), or None for a malformed entry."""
    if len(entry) < _FIXED:
        return None
    sig = entry[:SIGNATURE_SIZE]
    holder = int.from_bytes(entry[SIGNATURE_SIZE:SIGNATURE_SIZE + _HOLDER], "big")
    size = entry[_FIXED - 1]
    if size not in (0, SIGNATURE_SIZE) or len(entry) < _FIXED + size:
        return None
    return sig, holder, entry[_FIXED:_FIXED + size], entry[_FIXED + size:]


class SampleBook:
    def __init__(self, committee: Committee, node_id: int, params: Params, prover: VrfProver,
                 verifier: VrfVerifier) -> None:
        self.committee, self.node_id, self.params = committee, node_id, params
        self.prover, self.verifier = prover, verifier
        self.domain = committee.digest()
        self._others = {m: tuple(i for i in committee.ids if i != m) for m in committee.ids}
        self._mine: OrderedDict[tuple[int, int, str], tuple[bytes, tuple[int, ...]]] = OrderedDict()
        self._peers: OrderedDict[tuple[int, int, int, str], tuple[bytes, frozenset[int] | None]] = OrderedDict()
        self.proofs_verified = 0

    def _sample(self, node: int, beta: bytes) -> frozenset[int]:
        others = self._others[node]
        if self.params.dense:
            return frozenset(others)
        return draw(beta, others, self.params.sample_size)

    def mine(self, epoch: int, view: int, phase: str) -> tuple[bytes, tuple[int, ...]]:
        """Our proof and sample (sorted) for (epoch, view, phase); dense: no proof, everyone else."""
        if self.params.dense:
            return b"", self._others[self.node_id]
        key = (epoch, view, phase)
        hit = self._mine.get(key)
        if hit is None:
            proof, beta = self.prover.prove(alpha(self.domain, epoch, view, phase))
            hit = (proof, tuple(sorted(self._sample(self.node_id, beta))))
            self._mine[key] = hit
            if len(self._mine) > 64:
                self._mine.popitem(last=False)
        return hit

    def holds(self, sender: int, epoch: int, view: int, phase: str, proof: bytes) -> bool:
        """True when `proof` is the cached, valid proof of `sender` for (epoch, view, phase) and its sample
        holds us: what `sample_of` would accept without verifying anything. Reads only."""
        if self.params.dense:
            return not proof and sender != self.node_id and sender in self.committee
        hit = self._peers.get((sender, epoch, view, phase))
        return hit is not None and hit[0] == proof and hit[1] is not None and self.node_id in hit[1]

    def sample_of(self, sender: int, epoch: int, view: int, phase: str, proof: bytes) -> frozenset[int] | str:
        """`sender`'s sample for (epoch, view, phase) proven by `proof`, or a rejection reason. Dense:
        everyone but `sender`, for an empty proof only (there is nothing to prove; any bytes are refused
        so that one ballot has one encoding)."""
        if phase not in PHASES or sender not in self.committee:
            return BAD_PROOF
        if self.params.dense:
            return BAD_PROOF if proof else frozenset(self._others[sender])
        key = (sender, epoch, view, phase)
        hit = self._peers.get(key)
        if hit is not None:
            known, sample = hit
            if known != proof:
                return PROOF_MISMATCH
            return BAD_PROOF if sample is None else sample
        self.proofs_verified += 1
        beta = self.verifier.verify(sender, alpha(self.domain, epoch, view, phase), proof)
        sample = None if beta is None else self._sample(sender, beta)
        self._peers[key] = (proof, sample)
        if len(self._peers) > CACHE_SIZE:
            self._peers.popitem(last=False)
        return BAD_PROOF if sample is None else sample

    def sample_in_certificate(self, sender: int, epoch: int, view: int, phase: str,
                              proof: bytes) -> frozenset[int] | str:
        """Like `sample_of`, for a proof inside a certificate whose ballot signature checked out: when the
        cache holds another proof of this sender (a Byzantine sender that sent a forged one first), this
        one is verified on its own instead of failing the whole certificate, which would stall a node
        catching up; a valid one replaces a cached invalid one."""
        got = self.sample_of(sender, epoch, view, phase, proof)
        if got != PROOF_MISMATCH:
            return got
        self.proofs_verified += 1
        beta = self.verifier.verify(sender, alpha(self.domain, epoch, view, phase), proof)
        if beta is None:
            return BAD_PROOF
        sample = self._sample(sender, beta)
        key = (sender, epoch, view, phase)
        if self._peers.get(key, (b"", None))[1] is None:
            self._peers[key] = (proof, sample)
        return sample

    def check_certificate(self, cert: Certificate, verifier: Verifier, leader: Callable[[int, int], int]) -> bool:
        """True when `cert` holds >= q entries of distinct members, one holder, the leader's valid
        header signature, and for each signer a valid ballot signature and (unless it is the holder)
        a valid VRF proof whose sample holds the holder (module docstring)."""
        q = self.params.quorum
        if cert.kind not in PHASES or len(cert.signers) != len(cert.signatures) or len(cert.signers) < q:
            return False
        if len(set(cert.signers)) != len(cert.signers):
            return False
        if self.params.dense:
            key = ("probft-dense", self.domain, cert)
            known = verifier.verdicts.get(key)
            if known is None:
                known = verifier.verdicts.put(key, self._dense_signed(cert, verifier, leader))
            return bool(known)
        # The signature part is a pure function of the certificate and the keys, so it is memoised with
        # the verifier (once per process; once per run in the simulator). The sample part is ours: it
        # feeds our proof cache in the order it always did, which later ballots' checks depend on.
        key = ("probft", self.domain, cert)
        known = verifier.verdicts.get(key)
        if known is None:
            known = verifier.verdicts.put(key, self._signed_prefix(cert, verifier, leader))
        if known is False:
            return False
        holder, proofs, good = known
        for i, (signer, proof) in enumerate(zip(cert.signers, proofs, strict=True)):
            if i >= good:
                return False
            if signer != holder:
                sample = self.sample_in_certificate(signer, cert.epoch, cert.view, cert.kind, proof)
                if isinstance(sample, str) or holder not in sample:
                    return False
        return True

    def _signed_prefix(self, cert: Certificate, verifier: Verifier, leader: Callable[[int, int], int]
                       ) -> tuple[int, tuple[bytes, ...], int] | bool:
        """(holder, each entry's proof, how many leading entries are members with valid ballot
        signatures), or False when the entries are malformed, disagree on holder or header, or the
        leader's header signature is invalid."""
        parsed = [unpack_entry(e) for e in cert.signatures]
        if any(p is None for p in parsed):
            return False
        holders = {p[1] for p in parsed if p is not None}
        headers = {p[2] for p in parsed if p is not None}
        if len(holders) != 1 or len(headers) != 1:
            return False
        holder, header_sig = holders.pop(), headers.pop()
        if holder not in self.committee:
            return False
        chief = leader(cert.epoch, cert.view)
        head = encode(header(cert.epoch, cert.view, cert.height, cert.digest))
        # Empty only in certificates of re-proposals written before SignedNewView signed their headers.
        if header_sig and not verifier.verify(chief, signing_bytes(chief, head), header_sig):
            return False
        proofs = tuple(p[3] for p in parsed if p is not None)
        good = 0
        for signer, p in zip(cert.signers, parsed, strict=True):
            assert p is not None
            sig, _, _, proof = p
            if signer not in self.committee:
                break
            ballot = Ballot(kind=cert.kind, epoch=cert.epoch, view=cert.view, height=cert.height,
                            digest=cert.digest, proof=proof, header_signature=header_sig)
            # The signature first: only a proof its signer really sent may enter the sample cache.
            if not verifier.verify(signer, signing_bytes(signer, encode(ballot)), sig):
                break
            good += 1
        return holder, proofs, good

    def _dense_signed(self, cert: Certificate, verifier: Verifier, leader: Callable[[int, int], int]) -> bool:
        """Dense mode: every signer a member whose signature over its rebuilt ballot verifies, and the
        header signature (if any) the leader's. PBFT's rule: q = 2f + 1 distinct signers."""
        entries = cert.signatures
        if all(len(e) == SIGNATURE_SIZE for e in entries[1:]) and len(entries[0]) in DENSE_FIRST:
            header_sig = entries[0][SIGNATURE_SIZE:]
            parts = [(e[:SIGNATURE_SIZE], b"") for e in entries]
        else:  # the sampled layout, as dense certificates were written before (proofs not needed)
            parsed = [unpack_entry(e) for e in entries]
            if any(p is None for p in parsed) or len({p[2] for p in parsed if p is not None}) != 1:
                return False
            header_sig = parsed[0][2] if parsed[0] is not None else b""
            parts = [(p[0], p[3]) for p in parsed if p is not None]
        if header_sig:
            chief = leader(cert.epoch, cert.view)
            head = encode(header(cert.epoch, cert.view, cert.height, cert.digest))
            if not verifier.verify(chief, signing_bytes(chief, head), header_sig):
                return False
        for signer, (sig, proof) in zip(cert.signers, parts, strict=True):
            if signer not in self.committee:
                return False
            ballot = Ballot(kind=cert.kind, epoch=cert.epoch, view=cert.view, height=cert.height,
                            digest=cert.digest, proof=proof, header_signature=header_sig)
            if not verifier.verify(signer, signing_bytes(signer, encode(ballot)), sig):
                return False
        return True
