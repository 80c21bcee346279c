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
import warnings
from typing import Any, Callable, NoReturn

from absl import app, flags
from ml_collections import config_flags

from sorajax.config_loading import check_key, load_config

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_DEBUG = flags.DEFINE_bool("debug", False, "on an error, show the Python traceback instead of one line")

USAGE_EXIT, ERROR_EXIT, INTERRUPTED_EXIT = 2, 1, 130

# A persistent compilation cache (JAX_COMPILATION_CACHE_DIR) on a full disk cannot take a compiled program, or
# took it truncated: JAX compiles again (a cache miss, nothing lost), so its warning is not a line for the user.
warnings.filterwarnings("ignore", message=r"Error (writing|reading) persistent compilation cache entry",
                        category=UserWarning)


def one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _message(error: BaseException) -> str:
    """The text an error carries (KeyError and wrapped errors keep it in their first argument)."""
    inner: Any = error
    while isinstance(inner, (KeyError, AttributeError)) and inner.args:
        inner = inner.args[0]
    return one_line(inner)


def _raised_by_sorajax(error: BaseException) -> bool:
    """True when the innermost frame of the error's traceback is sorajax's own code."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(_PACKAGE + os.sep)


def describe(error: BaseException) -> str:
    """The one line a user sees for `error`."""
    message = _message(error)
    if _raised_by_sorajax(error) and message:
        return f"error: {message}"
    return f"error: {type(error).__name__}: {message} (unexpected: run again with --debug for the traceback)"


_CONFIG_FLAGS: dict[str, str] = {}  # each config flag's name and default file, for naming a bad override


def define_config(name: str, default: str, help_text: str) -> Any:
    """`ml_collections` config flag, whose `--name.key=value` overrides are read as the flag is defined
    (when the command's module is imported): a bad override is one usage line, not three tracebacks."""
    _CONFIG_FLAGS[name] = default
    try:
        return config_flags.DEFINE_config_file(name, default, help_text)
    except Exception as error:  # noqa: BLE001 - before absl runs, so before any other boundary
        if "--debug" in sys.argv:
            raise
        unknown = _unknown_override(name, default, sys.argv[1:])
        fail(f"usage error: --{name} override: {unknown or _message(error)} (see --helpshort)", USAGE_EXIT)


def _unknown_override(name: str, default: str, argv: list[str]) -> str | None:
    """The message for an unknown key among the `--name.key=value` overrides in `argv` (None: none is unknown),
    from the same check as `config_loading.apply_override`: its section, the known keys, the nearest one."""
    spec, keys = default, []
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            spec = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(argv):
            spec = argv[i + 1]
        elif arg.startswith(f"--{name}."):
            keys.append(arg[len(name) + 3:].split("=", 1)[0])
    try:
        config = load_config(spec)
        for key in keys:
            check_key(config, key)
    except KeyError as unknown:
        return _message(unknown)
    except Exception:  # noqa: BLE001 - the file itself fails to load: the flag's own error says why
        pass
    return None


def config_value(flag: Any) -> Any:
    """A config flag's value; a config file that failed to load is one line naming the flag and the cause."""
    try:
        value = flag.value
        value.keys()  # a file that failed to load is a placeholder that raises on first use
        return value
    except OSError as error:
        raise ValueError(f"--{flag.name} could not be loaded: {one_line(error)}; pass an existing config file "
                         "(e.g. one of the repository's configs/*.py), optionally with :variant") from None


def _without_traceback(message: str) -> str:
    """absl embeds a config file's traceback in its flag error: keep the text before it and its last line."""
    head, marker, tail = message.partition("Traceback (most recent call last):")
    return f"{head.strip()} {tail.strip().splitlines()[-1]}" if marker else message


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
        fail(f"usage error: {one_line(_without_traceback(str(error)))} (see --helpshort)", USAGE_EXIT)
    except Exception as error:  # a config file that fails to load, or an override it lacks, while flags are parsed
        if "--debug" in argv:
            raise
        for name, default in _CONFIG_FLAGS.items():
            unknown = _unknown_override(name, default, argv[1:])
            if unknown:
                fail(f"usage error: --{name} override: {unknown} (see --helpshort)", USAGE_EXIT)
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
