"""Shared core of every DWCP consensus protocol: sans-IO types, codec, crypto, committee.

How a driver (the asyncio transport, or the simulator) runs any protocol core:

    core = tpbft.Replica(committee=c, node_id=i, signer=s, verifier=v, config=tpbft.Config(...))
    for stored in my_log: core.handle(now, Restored(height=..., block=..., certificate=...))
    outputs = core.handle(now, Started())
    # then, forever: feed inputs, execute outputs in order
    #   Received(sender, message, signature)   after codec.open() verified the envelope
    #   TimerFired(timer)                      when a SetTimer's delay has passed (not cancelled)
    #   Submitted(tx)                          a client transaction (HTTP POST)
    #   SubmittedBatch(txs)                    several at once (cores with batch_submissions = True)
    #   Fetched(sender, block, certificate)    a certified block got via catch-up (RequestSync)
    #   Local(message)                         from another component of this node (a Narwhal worker)
    #   Recovered(key, value)                  what the core Persist-ed before a restart (before Restored)

Outputs (`core.outputs`): Send(to, message), Multicast(to, message), Broadcast(message) [all other
members], SetTimer(timer, delay) [replaces an equal timer], CancelTimer(timer),
Commit(height, block, certificate, txs) [in height order; persist before acknowledging `txs`],
Rejected(peer, reason) [count it], TxDropped(tx_id, reason) [answer the client 4xx],
RequestSync(peers, from_height, to_height) [fetch certified blocks, feed back as Fetched],
ToLocal(message) [hand to another component of this node, e.g. its worker],
Persist(key, value) [make durable before the next output; fed back as Recovered after a restart].

Wire: `Codec(protocol_message_types)`; `codec.seal(signer, msg) -> bytes` and
`codec.open(verifier, bytes) -> Opened(sender, message, signature, payload) | DecodeError(reason)`.
Pass `Opened.signature` on as `Received.signature`: cores build certificates from it.
`protocol.verify_certificate(committee, verifier, height, block, cert)` checks a fetched block.
Block ids: `codec.block_digest(block)`; tx ids: `Transaction.id` (blake2b-128 of the payload).
Committee file: `Committee.load(path)` / `.save(path)`; quorum arithmetic on `Committee`.
"""

from dwcp.consensus.core.codec import Codec, DecodeError, Opened, block_digest, encode, signing_bytes
from dwcp.consensus.core.committee import Committee, Member
from dwcp.consensus.core.crypto import (
    Ed25519Signer,
    Ed25519Verifier,
    MacSigner,
    MacVerifier,
    Signer,
    Verifier,
    generate_private_key,
    public_key_of,
)
from dwcp.consensus.core.inputs import (
    Fetched,
    Input,
    Local,
    Received,
    Recovered,
    Restored,
    Started,
    Submitted,
    SubmittedBatch,
    Timer,
    TimerFired,
)
from dwcp.consensus.core.messages import (
    Block,
    BlockRequest,
    BlockResponse,
    Certificate,
    CertifiedBlock,
    Decided,
    Message,
    Transaction,
    TxBatch,
    Vote,
    tx_id,
)
from dwcp.consensus.core.outputs import (
    Broadcast,
    CancelTimer,
    Commit,
    Multicast,
    Output,
    Persist,
    Rejected,
    RequestSync,
    Send,
    SetTimer,
    ToLocal,
    TxDropped,
)
from dwcp.consensus.core.protocol import LocalProtocolError, Protocol, verify_certificate

__all__ = [
    "Block", "BlockRequest", "BlockResponse", "Broadcast", "CancelTimer", "Certificate", "CertifiedBlock", "Codec",
    "Commit", "Committee", "Decided", "DecodeError", "Ed25519Signer", "Ed25519Verifier", "Fetched", "Input", "Local",
    "LocalProtocolError", "MacSigner", "MacVerifier", "Member", "Message", "Multicast", "Opened", "Output", "Persist",
    "Protocol", "Received", "Recovered", "Rejected", "RequestSync", "Restored", "Send", "SetTimer", "Signer",
    "Started", "Submitted", "SubmittedBatch", "Timer", "TimerFired", "ToLocal", "Transaction", "TxBatch", "TxDropped",
    "Verifier", "Vote", "block_digest", "encode", "generate_private_key", "public_key_of", "signing_bytes", "tx_id",
    "verify_certificate",
]
