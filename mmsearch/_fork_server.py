"""The workers' fork server's first import (its preload list names it first; nothing else
imports it): from here on the server ignores Ctrl-C.

Its imports (torch, MLflow's SQL store) take seconds, and a terminal's Ctrl-C reaches it too:
Python's own handler turned one among them into a KeyboardInterrupt traceback, printed below the
sweep's clean "interrupted". multiprocessing makes the server ignore SIGINT itself, but only
once its imports are done. The server's children inherit the ignore until they install their own
handlers, a worker's first step (``interrupt_once``); a stop their coordinator sent before that
is sent again (``Coordinator.stop_all``).

Not done by the coordinator around the server's start (an ignored signal stays ignored across
``exec``): ignoring is process-wide, and a Ctrl-C to the coordinator in that moment could be lost
to one of its threads (numpy's OpenBLAS pool is already running), leaving a sweep that ran on
after Ctrl-C. What is left uncovered is the server's own start before this import (Python's
start-up and ``multiprocessing.forkserver``'s imports, tens of milliseconds; a few hundred on a
loaded machine), where a Ctrl-C still prints its traceback: the command's answer is the same.
"""

from __future__ import annotations

import signal
import sys

if sys.argv == ["-c"] and "multiprocessing.forkserver" in sys.modules:  # the server's `python -c`, only
    signal.signal(signal.SIGINT, signal.SIG_IGN)
