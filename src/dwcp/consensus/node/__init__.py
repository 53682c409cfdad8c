"""A consensus node for real: `dwcp serve <tpbft|probft|...> --instance I`, any registered protocol.

`assemble.build_node(ctx)` puts keys (`keys`), the protocol's core and metrics (from the registry),
the block store and the driver together; `service.build_app(ctx)` serves it over HTTP; `load` is the
`dwcp up` load profile; `cluster.LocalCluster` runs n real node processes on loopback for end-to-end
tests and benchmarks. See docs/consensus-transport.md.
"""
