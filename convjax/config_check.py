"""The ``--config`` flag of a script checked before anything heavy loads: one line per mistake.

A wrong config path, a misspelt ``:variant`` and a misspelt ``--config.field=value``
override would otherwise surface as absl's traceback or a FATAL block after TensorFlow
and JAX have loaded. :func:`check_config_flag` loads the config and applies the
overrides the way the script will (ml_collections' own config flag) and turns each such
mistake into one ``error: ...`` line, keeping ml_collections' "did you mean" hint::

  error: --config.batch_sze=64: the config has no field batch_sze; did you mean --config.batch_size?

The check first loads the config without TensorFlow or JAX: ``convjax.data`` is entered
as a bare package (its ``__init__`` imports the tfds builders), which is all that the
dataset sections of most configs need, so the answer comes in well under a second. A
config that imports TensorFlow or JAX itself is then loaded in full, as the run would.
This module imports neither.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import sys
import types
from collections.abc import Iterator, Sequence

from absl import flags

from convjax import tensorflow_check

# Imports the quick load refuses: the config needs the full load.
HEAVY = ("tensorflow", "tensorflow_datasets", "jax", "jaxlib", "flax", "optax", "orbax")
# Packages whose ``__init__`` pulls in TensorFlow but whose config helpers do not.
BARE_PACKAGES = ("convjax.data",)
# What a config that does not load raises (ml_collections and absl wrap the config's own
# ValueError for an unknown variant).
CONFIG_ERRORS = (flags.Error, AttributeError, KeyError, ValueError, OSError, ImportError)
_HINT = re.compile(r'Did you mean "([^"]+)" instead of "([^"]+)"')


class _RefuseHeavy(importlib.abc.MetaPathFinder):
    """Fails every :data:`HEAVY` import and remembers that it did."""

    refused: list[str]

    def __init__(self) -> None:
        self.refused = []

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            self.refused.append(name)
            raise ImportError(f"{name} is not imported while the config is checked")
        return None


def config_args(argv: Sequence[str]) -> list[str]:
    """The ``--config=...`` / ``--config X`` and ``--config.field=value`` arguments."""
    kept = []
    for i, arg in enumerate(argv):
        if arg.startswith(("--config=", "--config.")):
            kept.append(arg)
        elif arg == "--config" and i + 1 < len(argv):
            kept.append(f"--config={argv[i + 1]}")
    return kept


def _missing_path_error(spec: str) -> str | None:
    """The error line for a ``--config`` file that does not exist, else None."""
    path = spec.partition(":")[0]
    if os.path.isfile(path):
        return None
    folder = os.path.dirname(path) or "."
    siblings = (
        sorted(f for f in os.listdir(folder) if f.endswith(".py")) if os.path.isdir(folder) else []
    )
    close = difflib.get_close_matches(os.path.basename(path), siblings, n=1)
    hint = f"; did you mean {os.path.join(os.path.dirname(path), close[0])}?" if close else ""
    return f"error: --config={spec}: no such file{hint}"


def _one_line(error: BaseException, args: Sequence[str]) -> str:
    """ml_collections' or absl's error for a config flag as one line."""
    message = str(error)
    hint = _HINT.search(message.replace("\\n", "\n"))
    if hint:
        right, wrong = hint.groups()
        override = next((a for a in args if re.search(rf"[.]{re.escape(wrong)}(=|$|[.])", a)), None)
        if override:
            name = override.split("=", 1)[0]
            suggestion = re.sub(rf"[.]{re.escape(wrong)}$", f".{right}", name)
            return f"error: {override}: the config has no field {wrong}; did you mean {suggestion}?"
        return f"error: the config has no field {wrong}; did you mean {right}?"
    innermost = error
    while innermost.__cause__ or innermost.__context__:
        innermost = innermost.__cause__ or innermost.__context__
    if "Traceback" in message or "\n" in message:
        message = str(innermost)
    message = " ".join(message.split())
    overrides = args[1:] if getattr(error, "from_overrides", False) else ()
    culprit = ", ".join(overrides) if overrides else args[0]
    return f"error: {message}" if message.startswith("flag --") else f"error: {culprit}: {message}"


@contextlib.contextmanager
def _without_heavy_imports() -> Iterator[_RefuseHeavy]:
    """Bare :data:`BARE_PACKAGES` and no :data:`HEAVY` import inside the block; every
    ``convjax``/``configs`` module it loaded is forgotten afterwards, so the run imports
    them properly."""
    before = set(sys.modules)
    for name in BARE_PACKAGES:
        if name not in sys.modules:
            spec = importlib.util.find_spec(name)
            bare = types.ModuleType(name)
            bare.__path__ = list(spec.submodule_search_locations)
            bare.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
            sys.modules[name] = bare
    finder = _RefuseHeavy()
    sys.meta_path.insert(0, finder)
    try:
        yield finder
    finally:
        sys.meta_path.remove(finder)
        for name in set(sys.modules) - before:
            if name.split(".")[0] in ("convjax", "configs"):
                del sys.modules[name]


def _load(args: Sequence[str]) -> None:
    """Loads the config and applies the overrides as the script's config flag will."""
    from ml_collections import config_flags

    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, sys_argv=["", *args])
    values(["", *args])
    values.config  # noqa: B018 -- raises the error of a config that failed to load


def _load_error(args: Sequence[str]) -> BaseException | None:
    """The exception that loading ``args`` raises, None if they load. An exception of
    the overrides is the user's whatever its type (an override that indexes into a
    string raises TypeError); one of the config itself only if it is a
    :data:`CONFIG_ERRORS` (else a bug in the config, which propagates)."""
    try:
        _load(args)
        return None
    except Exception as error:  # noqa: BLE001 -- sorted below
        if len(args) > 1:
            try:
                _load(args[:1])
            except CONFIG_ERRORS as config_error:
                return config_error
            error.from_overrides = True
            return error
        if isinstance(error, CONFIG_ERRORS):
            return error
        raise


def config_error(argv: Sequence[str]) -> str | None:
    """The one-line error for the ``--config`` flag and overrides in ``argv``, or None
    when they load (or there is no ``--config``)."""
    args = config_args(argv)
    spec = next((a for a in args if a.startswith("--config=")), None)
    if not spec:
        return None
    args = [spec, *(a for a in args if a.startswith("--config."))]
    missing = _missing_path_error(spec.split("=", 1)[1])
    if missing:
        return missing
    if importlib.util.find_spec("tensorflow") is None:  # configs import convjax.data
        return f"error: {tensorflow_check.MISSING}"
    try:
        with _without_heavy_imports() as finder:
            try:
                error = _load_error(args)
            except Exception:  # noqa: BLE001 -- a refused import, or a bug in the config
                error = None
            if not finder.refused:
                return error and _one_line(error, args)
        error = _load_error(args)  # the config imports TensorFlow or JAX
    except Exception:  # noqa: BLE001 -- a bug in the config: the script shows its traceback
        return None
    return error and _one_line(error, args)


def check_config_flag(argv: Sequence[str] | None = None) -> None:
    """Exits with status 1 and one ``error: ...`` line on stderr when the ``--config``
    flag in ``argv`` (default ``sys.argv``) does not load; an explicit ``--verbosity``
    skips the check, so the script's own traceback shows."""
    argv = sys.argv if argv is None else argv
    if any(a == "--verbosity" or a.startswith(("--verbosity=", "-v=")) for a in argv):
        return
    error = config_error(argv)
    if error:
        print(error, file=sys.stderr, flush=True)
        sys.exit(1)
