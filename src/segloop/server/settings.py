"""How a server runs: where it listens, who may sign in, how much one request may upload."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_MAX_UPLOAD_BYTES", "Settings", "is_loopback"]

#: Largest request body a route reads (a gzip NIfTI label or seed volume): 512 MiB.
DEFAULT_MAX_UPLOAD_BYTES = 512 * 2**20


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine.

    Examples:
        >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
        (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Settings:
    """A server's settings.

    Attributes:
        host: the address it listens on; off loopback every request must carry a user's token.
        port: the TCP port.
        users_file: a TOML file of more users (``name = "sha256 of the token"``), besides the project's.
        require_sign_in: ask for a token even on loopback (always true off loopback).
        local_author: the author of what anonymous loopback requests store (the login name).
        max_upload_bytes: the largest request body accepted (bytes; more is HTTP 413).
        cors_origins: origins allowed to call the API from other pages (none by default).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    users_file: Path | None = None
    require_sign_in: bool = False
    local_author: str = "local"
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    cors_origins: tuple[str, ...] = field(default_factory=tuple)

    @property
    def sign_in_required(self) -> bool:
        """Whether a request without a valid token is refused (HTTP 401)."""
        return self.require_sign_in or not is_loopback(self.host)
