"""Optional TLS on every service's HTTP port: one mechanism, from the inventory.

Which files. `services.<key>.tls` if set, else `security.tls`, else none (plain HTTP). Each names
`cert_file` (the server's certificate chain, PEM; it must name the instance's host, as a DNS or IP
subjectAltName, since clients check it), `key_file` (its private key, PEM, mode 0600: a key group or
others can read is refused, as token files are) and optionally `ca_file` (what clients verify the server
against: a CA bundle; default `cert_file`, i.e. a self-signed certificate pinned). Relative paths are
relative to the inventory file. `Instance.url` is `https://...` for such a service, so every client that
builds URLs from the inventory speaks TLS to it.

Server side. `server_files(inventory, key)` checks the files (each readable, the key private, cert and
key a pair) and `runtime.server.run_app` serves HTTPS with them under the same `ConnectionGuard`: the guard
sees a connection once its TLS handshake is done, and a handshake must finish within the guard's
`header_timeout_s` (the slow-loris bound before the guard; asyncio's default would be 60 s).

Client side. `client_verify(inventory, keys)` is what to pass as httpx's `verify=`: an `ssl.SSLContext`
trusting exactly the CA files of the TLS services among `keys` (not the system store: a public CA's
certificate for a service's address is not that service), with hostname checking, or `True` (httpx's
default) when none of them has TLS. Plain-HTTP URLs (Prometheus, a service without TLS) are unaffected.
"""

from __future__ import annotations

import ssl
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dwcp.runtime.auth import inventory_relative

if TYPE_CHECKING:
    from dwcp.runtime.inventory import Inventory

class TlsFileError(ValueError):
    """A certificate, key or CA file that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True, slots=True)
class HttpTls:
    """One service's TLS files, resolved to absolute paths."""

    cert: Path
    key: Path
    ca: Path


def service_tls(inventory: Inventory, key: str) -> HttpTls | None:
    """The TLS files service `key` serves with, or None for plain HTTP (see the module docstring)."""
    spec = inventory.services.get(key)
    files = (spec.tls if spec is not None else None) or inventory.security.tls
    if files is None:
        return None
    def path(raw: str) -> Path:
        return inventory_relative(raw, inventory)

    return HttpTls(cert=path(files.cert_file), key=path(files.key_file), ca=path(files.ca_file or files.cert_file))


def _readable(path: Path, what: str) -> None:
    try:
        with path.open("rb") as f:
            f.read(1)
    except FileNotFoundError:
        raise TlsFileError(f"{path}: TLS {what} file not found") from None
    except IsADirectoryError:
        raise TlsFileError(f"{path}: TLS {what} file is a directory") from None
    except PermissionError:
        raise TlsFileError(f"{path}: TLS {what} file is not readable by this user") from None


def check_server_files(tls: HttpTls) -> HttpTls:
    """`tls` if a server can use it: every file readable, the key private, certificate and key one pair."""
    _readable(tls.cert, "certificate")
    _readable(tls.key, "key")
    mode = tls.key.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TlsFileError(f"{tls.key}: TLS key file is readable by group or others (mode {stat.S_IMODE(mode):o}); "
                           f"run chmod 600 {tls.key}")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(tls.cert, tls.key)
    except ssl.SSLError as exc:
        raise TlsFileError(f"{tls.cert}, {tls.key}: not a PEM certificate and its private key ({exc.reason})") from None
    return tls


def server_context(tls: HttpTls) -> ssl.SSLContext:
    """The server side of HTTPS with `tls`'s certificate and key: TLS 1.2 or later, no client certificates."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert, tls.key)
    return context


def server_files(inventory: Inventory, key: str) -> HttpTls | None:
    """Service `key`'s checked TLS files (TlsFileError naming the bad one), or None for plain HTTP."""
    tls = service_tls(inventory, key)
    return check_server_files(tls) if tls is not None else None


def client_verify(inventory: Inventory, keys: Iterable[str] | None = None) -> ssl.SSLContext | bool:
    """httpx's `verify=` for a client of the services `keys` (default: all): a context trusting exactly their
    CA files, or True when none of them serves TLS. TlsFileError when a CA file cannot be used."""
    wanted = keys if keys is not None else inventory.services
    cas = sorted({tls.ca for key in wanted if key in inventory.services
                  if (tls := service_tls(inventory, key)) is not None})
    if not cas:
        return True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # hostname checked, certificate required; no system CAs
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for ca in cas:
        _readable(ca, "CA")
        try:
            context.load_verify_locations(cafile=ca)
        except ssl.SSLError as exc:
            raise TlsFileError(f"{ca}: TLS CA file holds no PEM certificate ({exc.reason})") from None
    return context
