"""The ``mmsearch`` command: a thin layer over the library."""

from mmsearch.cli._main import main

__all__ = ["main"]
