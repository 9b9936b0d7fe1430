"""The network: fail fast when offline instead of letting a download hang; URLs fit to print."""

from __future__ import annotations

import socket
import urllib.parse

from mmsearch._paths import offline_forced


def can_reach(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    if offline_forced():
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def masked(url: str) -> str:
    """``url`` with its password (if any) shown as ``***``: for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
