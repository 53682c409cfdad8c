"""BFT consensus for DWCP: a shared sans-IO core (`core`), protocol cores (`pbft`, `tpbft`), the
deterministic simulator (`sim`), and the asyncio transport and node service that run cores for real.
See docs/consensus.md."""
