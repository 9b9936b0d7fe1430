"""Fail fast when offline instead of letting a download hang."""

from __future__ import annotations

import socket

from mmsearch._paths import offline_forced


def can_reach(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    if offline_forced():
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
