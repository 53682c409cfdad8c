import pytest
from prometheus_client import CollectorRegistry

from dwcp.runtime.breaker import BreakerConfig, BreakerMetrics, BreakerState, CircuitBreaker, CircuitOpenError


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup():
    clock, registry = FakeClock(), CollectorRegistry()
    cfg = BreakerConfig(failure_threshold=3, open_seconds=5, success_threshold=2, half_open_max_calls=1)
    breaker = CircuitBreaker("peer", cfg, BreakerMetrics(registry, "dwcp-manager"), clock=clock)
    return breaker, clock, registry


def state_value(registry, state):
    return registry.get_sample_value("dwcp_circuit_breaker_state",
                                     {"service": "dwcp-manager", "breaker": "peer", "state": state})


def test_opens_after_consecutive_failures_only(setup):
    breaker, _, registry = setup
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # a success resets the streak
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert state_value(registry, "open") == 1 and state_value(registry, "closed") == 0
    assert registry.get_sample_value("dwcp_circuit_breaker_transitions_total", {
        "service": "dwcp-manager", "breaker": "peer", "from_state": "closed", "to_state": "open"}) == 1


def test_open_refuses_until_timeout_then_half_open_allows_one_probe(setup):
    breaker, clock, registry = setup
    for _ in range(3):
        breaker.record_failure()
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.allow()
    assert breaker.state is BreakerState.HALF_OPEN and state_value(registry, "half_open") == 1
    assert not breaker.allow()  # only one probe at a time


def test_half_open_closes_after_successes_and_reopens_on_failure(setup):
    breaker, clock, _ = setup
    for _ in range(3):
        breaker.record_failure()
    clock.now += 6
    assert breaker.allow()
    breaker.record_success()
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    for _ in range(3):
        breaker.record_failure()
    clock.now += 6
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()


async def test_call_wraps_outcomes_and_raises_while_open(setup):
    breaker, _, _ = setup

    async def boom():
        raise ConnectionError("down")

    async def fine():
        return 42

    assert await breaker.call(fine) == 42
    for _ in range(3):
        with pytest.raises(ConnectionError):
            await breaker.call(boom)
    with pytest.raises(CircuitOpenError, match="'peer' is open"):
        await breaker.call(fine)


def test_time_in_state_counts_seconds_in_each_state_up_to_the_scrape():
    clock, registry = FakeClock(), CollectorRegistry()
    cfg = BreakerConfig(failure_threshold=1, open_seconds=5, success_threshold=1)
    breaker = CircuitBreaker("selector", cfg, BreakerMetrics(registry, "dwcp-manager", clock=clock), clock=clock)

    def seconds(state):
        return registry.get_sample_value("dwcp_circuit_breaker_state_seconds_total",
                                         {"service": "dwcp-manager", "breaker": "selector", "state": state})

    clock.now += 90  # closed
    breaker.record_failure()
    clock.now += 6  # open
    assert breaker.allow()  # half-open probe
    clock.now += 1
    breaker.record_success()  # closed again
    clock.now += 3
    assert (seconds("closed"), seconds("open"), seconds("half_open")) == (93, 6, 1)
