"""Plumbing every DWCP service shares: inventory, service context, ASGI app, errors, breaker, supervision."""

from dwcp.runtime.app import HealthResult, create_app
from dwcp.runtime.breaker import BreakerConfig, CircuitBreaker, CircuitOpenError
from dwcp.runtime.context import ServiceContext
from dwcp.runtime.errors import ApiError
from dwcp.runtime.inventory import Inventory, InventoryError, load_inventory

__all__ = [
    "ApiError",
    "BreakerConfig",
    "CircuitBreaker",
    "CircuitOpenError",
    "HealthResult",
    "Inventory",
    "InventoryError",
    "ServiceContext",
    "create_app",
    "load_inventory",
]
