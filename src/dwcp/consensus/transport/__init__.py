"""Runs any sans-IO consensus core over TCP and SQLite (see docs/consensus-transport.md).

`framing` (length-prefixed channel frames), `peers` (bounded per-peer queues), `tcp` (mutually
authenticated TLS links via `dwcp.runtime.peerauth`, and redial), `sync` (catch-up messages and
planner), `writer` (group commit to `dwcp.consensus.storage`), `metrics` (`dwcp_consensus_*`), and
`driver`, the one loop that feeds a core its inputs and executes its outputs.
"""
