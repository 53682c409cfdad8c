import pytest

from dwcp.allocator.cluster import HostSpec


@pytest.fixture
def two_hosts() -> list[HostSpec]:
    """A small and a big host, one group each."""
    return [HostSpec("small", 4, 16, 1000, group=0), HostSpec("big", 8, 32, 1000, group=1)]
