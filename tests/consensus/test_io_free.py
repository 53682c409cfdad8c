"""Cores are sans-IO: nothing under `consensus/core` or a registered protocol's package imports a
clock, a socket, threads, global randomness or metrics.

Time reaches a core as `now`, randomness as an injected `random.Random`, and metrics are the driver's
job (a package's `metrics.py` is the one module allowed prometheus_client). Imports under
`if TYPE_CHECKING:` never run, so a type hint such as `random.Random` may be imported there.
The protocol packages come from the registry, so a new protocol is checked as soon as it has a row.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from dwcp.consensus import registry

FORBIDDEN = ("asyncio", "time", "socket", "threading", "random", "prometheus_client")
CONSENSUS = Path(importlib.import_module("dwcp.consensus").__file__).parent  # type: ignore[arg-type]


def _package_dir(spec: registry.ProtocolSpec) -> Path:
    """The top-level package under dwcp.consensus that holds the protocol's core class."""
    parts = spec.replica.__module__.split(".")
    assert parts[:2] == ["dwcp", "consensus"] and len(parts) >= 3, spec.replica.__module__
    return CONSENSUS / parts[2]


def _under_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def forbidden_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import of a FORBIDDEN module (or a submodule) that runs at import."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _under_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            modules = []
        for module in modules:
            if module.split(".")[0] in FORBIDDEN:
                found.append((node.lineno, module))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


def checked_modules() -> list[Path]:
    dirs = {CONSENSUS / "core", *(_package_dir(spec) for spec in registry.PROTOCOLS.values())}
    return sorted(p for d in dirs for p in d.rglob("*.py") if p.name != "metrics.py")


def test_the_scan_covers_the_core_and_every_registered_protocol() -> None:
    names = {p.relative_to(CONSENSUS).as_posix() for p in checked_modules()}
    assert {"core/codec.py", "pbft/replica.py", "pbft/viewchange.py", "tpbft/trust.py"} <= names
    assert "pbft/metrics.py" not in names and "tpbft/metrics.py" not in names


@pytest.mark.parametrize("path", checked_modules(), ids=lambda p: p.relative_to(CONSENSUS).as_posix())
def test_core_and_protocol_modules_do_no_io(path: Path) -> None:
    assert forbidden_imports(path.read_text()) == []


@pytest.mark.parametrize(("source", "found"), [
    ("import asyncio", [(1, "asyncio")]),
    ("import os, time as t", [(1, "time")]),
    ("from socket import socket", [(1, "socket")]),
    ("from prometheus_client.core import Gauge", [(1, "prometheus_client.core")]),
    ("def f():\n    import random\n    return random.random()", [(2, "random")]),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import random\nelse:\n    import threading",
     [(5, "threading")]),
    ("import typing\nif typing.TYPE_CHECKING:\n    import random", []),
    ("from . import time\nimport timeit\nfrom dwcp.consensus.core import codec", []),
])
def test_the_scan_finds_imports_that_run_and_ignores_type_only_ones(source: str, found: list) -> None:
    assert forbidden_imports(source) == found
