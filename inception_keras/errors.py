"""User errors and the one-line CLI error convention shared by every command.

A :class:`UserError` is a mistake the user can fix (bad path, bad size, unknown
dataset, corrupt file).  Library functions raise it with a message that says
what is wrong *and* what to do; command-line entry points catch it through
:func:`run_cli`, print a single ``error: ...`` line on stderr and exit with
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, NoReturn, Sequence


class UserError(ValueError):
    """A problem with the user's input, reported as one line without a traceback."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse parser whose errors are :class:`UserError` instead of usage dumps."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see {self.prog} --help)")


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None, *,
            interrupted: str = "run the same command again") -> int:
    """Run a CLI ``main`` and turn a :class:`UserError` into ``error: ...`` and exit status 2.

    Ctrl-C prints ``error: interrupted; <interrupted>`` and exits with 130: a command
    whose rerun does not resume says what a rerun does instead.
    """
    try:
        return int(main(argv) or 0)
    except UserError as exc:
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"error: interrupted; {interrupted}", file=sys.stderr)
        return 130
