"""Bearer tokens on every DWCP service's write endpoints: one mechanism, applied by `create_app`.

Server side. `create_app(ctx, ...)` guards every request whose method writes (POST, PUT, PATCH, DELETE)
with `ctx.token_file`: the request needs `Authorization: Bearer <token>` with a token from that file, or
it is answered 401 (`{"error": {"code": "unauthorized", ...}}`, `WWW-Authenticate: Bearer`) before any
handler, body read or route lookup runs. GET, HEAD and OPTIONS stay open (`/health`, `/metrics` and the
read-only API). A service writes no auth code of its own; a new service built on `create_app` is guarded.
`ServiceContext.token_file = None` (only hand-built contexts in tests) leaves writes open, and says so
in the log at startup.

Token files. A token file holds one token per line; every line is accepted, clients send the first, so
a token is rotated by putting the new one first, waiting until every client has re-read the file, then
deleting the old line. Services re-read the file within `RELOAD_S` of a change, without a restart.
`ensure_token_file(path)` makes a missing file (256 random bits, URL-safe base64, mode 0600 in a 0700
directory; created atomically, so concurrent starters agree on one token) and refuses a file that group or
others can read, as ssh does for keys. Tokens are never logged; logs name the file.

Where the file is (`token_path`): `services.<key>.token_file`, else the inventory's
`security.token_file` (relative paths are relative to the inventory file), else
`$DWCP_RUN_DIR/secrets/http-token` under `dwcp up`, else `<data root>/secrets/http-token`. `dwcp up`
creates the files it needs before starting anything, and refuses a multi-host inventory that does not
name one (every host must share it).

Client side. `client_auth(inventory)` is an `httpx.Auth` that adds each service's token to requests sent
to that service's instances (matched by host and port) and to nothing else, so one shared client (the
load generator, `dwcp status`, the manager) can talk to every service without leaking a token to
Prometheus or to a service of another trust domain. `bearer_header(token)` is the header for raw clients.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
import time
from collections.abc import Generator, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from dwcp.runtime.inventory import Inventory

log = logging.getLogger("dwcp.runtime.auth")

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TOKEN_FILE_NAME = "http-token"
RUN_DIR_ENV = "DWCP_RUN_DIR"  # the same variable runtime.server exports to `dwcp up`'s children
# How stale a service's view of its token file may be after a rotation.
RELOAD_S = 1.0
# A shorter token is a typo or a placeholder, not a secret: 16 characters of base64 are 96 bits.
MIN_TOKEN_CHARS = 16


class TokenFileError(ValueError):
    """A token file that cannot be used; the message names the file and says how to fix it."""


def new_token() -> str:
    """256 random bits as 43 URL-safe characters."""
    return secrets.token_urlsafe(32)


def read_tokens(path: Path) -> list[str]:
    """The tokens in `path`, first (the one clients send) first; refuses a readable-by-others file."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise TokenFileError(f"{path}: token file not found (dwcp up creates it; or write one, mode 0600)") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokenFileError(f"{path}: token file is readable by group or others (mode {stat.S_IMODE(mode):o}); "
                             f"run chmod 600 {path}")
    tokens = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not tokens:
        raise TokenFileError(f"{path}: token file is empty")
    short = [i for i, t in enumerate(tokens) if len(t) < MIN_TOKEN_CHARS or any(c.isspace() for c in t)]
    if short:
        raise TokenFileError(f"{path}: line {short[0] + 1} is not a token (at least {MIN_TOKEN_CHARS} characters, "
                             "no spaces)")
    return tokens


def ensure_token_file(path: Path) -> Path:
    """Create `path` with a fresh token unless it exists (atomically: a racing creator's file wins); then
    check it as `read_tokens` does."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (new_token() + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another process made the file meanwhile: theirs is the token
            log.info("created token file %s", path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    read_tokens(path)
    return path


class TokenFile:
    """The tokens a service accepts, from its token file, re-read within `RELOAD_S` of a change."""

    def __init__(self, path: Path, clock=time.monotonic) -> None:
        self.path = Path(path)
        self._clock = clock
        self._tokens = [t.encode() for t in read_tokens(self.path)]
        self._signature = self._stat()
        self._checked = clock()

    def _stat(self) -> tuple[int, int, int]:
        st = self.path.stat()
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._checked < RELOAD_S:
            return
        self._checked = now
        try:
            signature = self._stat()
            if signature != self._signature:
                self._tokens = [t.encode() for t in read_tokens(self.path)]
                self._signature = signature
                log.info("reloaded token file %s", self.path)
        except (OSError, TokenFileError) as exc:
            # Keep accepting the last good tokens: a half-edited file must not lock every client out.
            log.warning("token file %s unusable, keeping the previous tokens: %s", self.path, exc)

    def accepts(self, authorization: bytes) -> bool:
        """Whether an Authorization header value carries one of the tokens (compared in constant time)."""
        scheme, _, presented = authorization.strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        presented = presented.strip()
        self._refresh()
        # Compare against every token, never stopping early, so timing says nothing about which matched.
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(presented, token)
        return matched


def bearer_header(token: str) -> dict[str, str]:
    """The header a raw client sends."""
    return {"Authorization": f"Bearer {token}"}


def client_token(path: Path) -> str:
    """The token a client sends: the token file's first line."""
    return read_tokens(Path(path))[0]


def inventory_relative(raw: str, inventory: Inventory) -> Path:
    """A path named in the inventory: relative paths are relative to the inventory file."""
    path = Path(raw).expanduser()
    if path.is_absolute():
        return path
    source = Path(inventory.source)
    base = source.parent if source.is_file() else Path.cwd()
    return (base / path).resolve()


def explicit_token_file(inventory: Inventory, key: str) -> str | None:
    """The token file the inventory names for service `key`, if it names one."""
    spec = inventory.services.get(key)
    return (spec.token_file if spec is not None else None) or inventory.security.token_file


def token_path(inventory: Inventory, key: str, data_root: Path | None = None, run_dir: Path | None = None) -> Path:
    """Where service `key`'s token file is (see the module docstring for the order)."""
    raw = explicit_token_file(inventory, key)
    if raw:
        return inventory_relative(raw, inventory)
    run_dir = run_dir or os.environ.get(RUN_DIR_ENV)
    if run_dir:
        return Path(run_dir) / "secrets" / TOKEN_FILE_NAME
    return Path(data_root or "dwcp-data") / "secrets" / TOKEN_FILE_NAME


def token_paths(inventory: Inventory, keys: Iterable[str], data_root: Path | None = None,
                run_dir: Path | None = None) -> dict[str, Path]:
    """Each service's token file, for those in `keys`."""
    return {key: token_path(inventory, key, data_root, run_dir) for key in keys}


class BearerAuth(httpx.Auth):
    """Adds the right token to requests for known (host, port) addresses, and nothing to any other."""

    def __init__(self, tokens: dict[tuple[str, int], str]) -> None:
        self.tokens = {(_canonical(h), p): t for (h, p), t in tokens.items()}

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.tokens.get((_canonical(request.url.host), request.url.port or 80))
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token}"
        yield request


def _canonical(host: str) -> str:
    return "127.0.0.1" if host in ("localhost", "127.0.0.1") else host


def client_auth(inventory: Inventory, data_root: Path | None = None, keys: Iterable[str] | None = None) -> BearerAuth:
    """An httpx auth sending each service's token to its instances; a service whose token file cannot be
    read gets none (its writes will be answered 401, which says what is wrong), with a warning."""
    tokens: dict[tuple[str, int], str] = {}
    wanted = [key for key in (keys if keys is not None else inventory.services) if key in inventory.services]
    for key, path in token_paths(inventory, wanted, data_root).items():
        try:
            token = client_token(path)
        except TokenFileError as exc:
            log.warning("no token for %s: %s", key, exc)
            continue
        for inst in inventory.services[key].instances:
            tokens[inst.host, inst.port] = token
    return BearerAuth(tokens)


def deny_response_headers() -> list[tuple[bytes, bytes]]:
    return [(b"www-authenticate", b'Bearer realm="dwcp"')]


def authorization_of(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The Authorization header of an ASGI request, b"" without one."""
    for name, value in headers:
        if name == b"authorization":
            return value
    return b""


