"""One error boundary for every command: an error is one line and a non-zero exit, never a traceback.

A sorajax error (a bad size, a missing run, a bad file, a refused resume) already names the problem
and the fix; the command prints it as `error: ...` and exits 1. A usage error (an unknown flag, a
bad flag value, conflicting modes) prints `usage error: ...` first and exits 2, without pages of
flag help. An error raised outside sorajax's own code (a bug, or a library failing) is one line too,
with its type, and `--debug` shows the full traceback for a bug report. Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Any, Callable, NoReturn

from absl import app, flags

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_DEBUG = flags.DEFINE_bool("debug", False, "on an error, show the Python traceback instead of one line")

USAGE_EXIT, ERROR_EXIT, INTERRUPTED_EXIT = 2, 1, 130


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def _raised_by_sorajax(error: BaseException) -> bool:
    """True when the innermost frame of the error's traceback is sorajax's own code."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(_PACKAGE + os.sep)


def describe(error: BaseException) -> str:
    """The one line a user sees for `error`."""
    message = one_line(error.args[0] if isinstance(error, KeyError) and error.args else error)
    if _raised_by_sorajax(error) and message:
        return f"error: {message}"
    return f"error: {type(error).__name__}: {message} (unexpected: run again with --debug for the traceback)"


def fail(line: str, code: int) -> NoReturn:
    print(line, file=sys.stderr)
    sys.exit(code)


def guarded(main: Callable[..., Any], debug: Callable[[], bool] = lambda: bool(_DEBUG.value)) -> Callable[..., Any]:
    """`main` with the boundary (see the module docstring)."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except app.UsageError as error:
            fail(f"usage error: {one_line(error)} (see --helpshort)", USAGE_EXIT)
        except KeyboardInterrupt:
            fail("interrupted", INTERRUPTED_EXIT)
        except Exception as error:  # noqa: BLE001 - the boundary: every error becomes one line
            if debug():
                raise
            fail(describe(error), ERROR_EXIT)

    return wrapped


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        fail(f"usage error: {one_line(error)} (see --helpshort)", USAGE_EXIT)
    except Exception as error:  # a config file that fails to load while flags are parsed
        if "--debug" in argv:
            raise
        fail(describe(error), ERROR_EXIT)


def run(main: Callable[[list[str]], None]) -> None:
    """`absl.app.run(main)` behind the boundary: what every absl command's `__main__` calls."""
    app.run(guarded(main), flags_parser=_parse_flags)


class ArgumentParser(argparse.ArgumentParser):
    """argparse for the commands that use it, with the same one-line usage errors."""

    def error(self, message: str) -> NoReturn:
        fail(f"usage error: {one_line(message)} (see --help)", USAGE_EXIT)


def run_argparse(main: Callable[[], None], argv: list[str] | None = None) -> None:
    """An argparse command's `main()` behind the boundary (`--debug` shows the traceback)."""
    argv = sys.argv[1:] if argv is None else argv
    guarded(main, debug=lambda: "--debug" in argv)()
