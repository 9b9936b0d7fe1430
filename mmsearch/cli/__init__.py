"""The ``mmsearch`` command: a thin layer over the library."""

from mmsearch.cli._main import build_parser, main

__all__ = ["build_parser", "main"]
