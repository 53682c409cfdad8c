"""Package data of the allocator: the committed MADDPG checkpoint and sample traces."""
