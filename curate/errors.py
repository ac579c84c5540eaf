"""Named library errors. Per-image problems are never errors: they are a ``reason`` in the data.

The CLI maps each class to an exit code, so scripts can tell a bad config from a bad input.
"""


class CurateError(Exception):
    """Base class; exit code 1."""

    exit_code = 1


class ConfigError(CurateError, ValueError):
    """A configuration value is invalid (raised at construction, before any work)."""

    exit_code = 2


class InputError(CurateError):
    """The input as a whole cannot be read (missing path, unknown format, malformed index)."""

    exit_code = 3


class ModelError(CurateError):
    """A model file is missing, unreadable, or does not have the expected inputs/outputs."""

    exit_code = 4


class MissingDependency(CurateError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    exit_code = 5


class SchemaError(CurateError):
    """A table does not carry the columns a stage declares it reads."""

    exit_code = 6


class OutputError(CurateError):
    """The output directory is unusable (read-only, full, or holds a run with another config)."""

    exit_code = 7


class OtherRun(OutputError):
    """The output directory holds another run (or training) made with other settings: resume it
    with the same ones, or use another directory. Exit code 9 (7 is the directory itself failing:
    not writable, full)."""

    exit_code = 9


class RunLocked(CurateError):
    """Another curate process is writing the run directory."""

    exit_code = 8


class Interrupted(CurateError):
    """Stopped by the user (Ctrl-C); the run resumes when the same command is run again."""

    exit_code = 130


def require_module(module: str, extra: str):
    """Import an optional dependency or raise MissingDependency naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        target = "facecurate" if extra == "default" else f"'facecurate[{extra}]'"
        raise MissingDependency(f"{module} is not installed: pip install {target} ({exc})") from exc
