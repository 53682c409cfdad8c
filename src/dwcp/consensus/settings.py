"""Settings of a consensus node (`services.<tpbft|probft|bullshark>.settings` in the inventory).

This model owns what every protocol's node shares: which protocol runs, the client API's limits,
catch-up, the transport's queues and the keys. Every other key of the mapping belongs to the
protocol and is validated by the protocol's own model (`registry.ProtocolSpec.settings`, e.g.
`pbft/settings.py`), at inventory load when the protocol is known there (the inventory passes the
service name as validation context), and again when the node is built.

Keys. With `key_dir` set, node I loads its private key from `<key_dir>/node-<I>.key` and the
committee's public keys and pinned certificates from `<key_dir>/committee.json` (what
`dwcp consensus keygen` writes). Without it, only `dwcp up` on one host can run the node: it makes
fresh keys for the deployment (node/keys.py). No key is ever derived from a seed.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator


class ConsensusSettings(BaseModel):
    # Keys not declared here are the protocol's; `protocol_settings` validates them.
    model_config = ConfigDict(extra="allow")

    protocol: str | None = Field(
        None, description="Registered protocol to run (dwcp.consensus.registry); None runs the service's own "
        "protocol (e.g. pbft on the tpbft service runs classic PBFT over the whole committee as the baseline)."
    )
    # Client API limits.
    max_tx_bytes: int = Field(4096, ge=1, le=1024 * 1024, description="Largest transaction payload accepted.")
    max_pending: int = Field(100_000, ge=1, description="Pending transactions per node before 503 (backpressure).")
    # Catch-up and transport.
    sync_interval_ms: float = Field(500.0, gt=0, description="How often a node tells peers its committed height.")
    sync_max_blocks: int = Field(64, ge=1, description="Most blocks in one catch-up response.")
    max_unsynced_ms: float = Field(
        50.0, ge=0, description="A committed block holding none of the transactions submitted to this node is "
        "written without an fsync of its own and made durable with the next one that does, at most this long "
        "after (0: fsync every block). Answers (a commit, a block, a transaction's status) name only durable blocks.")
    peer_queue_max_bytes: int = Field(16 * 1024 * 1024, ge=64 * 1024, description="Outbound queue bound per peer.")
    # Keys (see module docstring).
    key_dir: str | None = Field(
        None, description="Directory with node-<I>.key and committee.json (dwcp consensus keygen); None: the "
        "fresh per-deployment keys `dwcp up` makes (one host only).")

    @field_validator("protocol")
    @classmethod
    def _registered(cls, name: str | None) -> str | None:
        from dwcp.consensus import registry

        if name is not None and name not in registry.PROTOCOLS:
            raise ValueError(f"unknown protocol {name!r}; known: {', '.join(registry.names())}")
        return name

    @model_validator(mode="after")
    def _protocol_keys(self, info: ValidationInfo) -> ConsensusSettings:
        from dwcp.consensus import registry

        service = (info.context or {}).get("service") if isinstance(info.context, dict) else None
        name = self.protocol or service
        if name in registry.PROTOCOLS:  # else checked when the node is built (`protocol_settings`)
            self.protocol_settings(name)
        return self

    def protocol_name(self, service: str) -> str:
        """The protocol this node runs on `service`."""
        return self.protocol or service

    def protocol_settings(self, protocol: str) -> Any:
        """`protocol`'s own settings model from the keys this model does not own; ValueError naming
        the protocol for an unknown key or a bad value."""
        from dwcp.consensus import registry

        spec = registry.get(protocol)
        try:
            return spec.core_settings(self.model_extra or {})
        except ValidationError as exc:
            raise ValueError(_protocol_errors(protocol, exc)) from None


def _protocol_errors(protocol: str, exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        if error["type"] == "extra_forbidden":
            parts.append(f"{where}: the {protocol} protocol has no such setting")
        else:
            parts.append(f"{where}: {error['msg']} (for protocol {protocol})")
    return "; ".join(parts)
