"""User-facing errors: one line per mistake, exit code 2, no traceback."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A mistake in the user's input (config, file, model reference, data row).

    The message must name the key, file or row at fault and say what would fix it.
    """


def exit_on_user_error(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a recipe's main so a UserError prints `error: <message>` and exits with code 2.

    Under a multi-process launch every rank meets the same mistake; only the main one (RANK 0) prints
    it. (`accelerate launch` then exits 1 and, unless given `-q`, adds a traceback of its own.)
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            if os.environ.get("RANK", "0") == "0":
                for line in str(e).splitlines() or [""]:  # several config mistakes: one line each
                    print(f"error: {line}", file=sys.stderr, flush=True)
            sys.exit(2)

    return wrapper
