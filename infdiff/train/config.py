"""ml_collections config files with command-line overrides.

A config file is a Python file defining ``get_config() -> ConfigDict`` (or ``get_config(arg)``, given
as ``path/to/config.py:arg``).  Scripts take ``--NAME path/to/config.py`` plus any number of
``--NAME.section.key=value`` (or ``--NAME.section.key value``) overrides, as the ∞-Diff scripts do
with absl's config flags.
Configs are locked after loading: an unknown or mistyped key is an error naming the key and
its closest existing spelling, never a silent default, and a value must parse as the type of
the field it replaces (a field that is ``None`` takes any Python literal, or the text itself).
An ``aliases`` table maps other spellings of keys (e.g. a paper's) to the config's own.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import inspect
import json
import traceback
from pathlib import Path
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import ml_collections

Aliases = Mapping[str, str]


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says which and why."""


def split_config_argument(path) -> Tuple[Path, Optional[str]]:
    """``"file.py:ARG"`` as ``(file.py, "ARG")`` (absl's config-flag spelling); any other path as ``(path, None)``."""
    text = str(path)
    file, colon, argument = text.rpartition(":")
    return (Path(file), argument) if colon and file.endswith(".py") else (Path(text), None)


def load_config_file(path) -> ml_collections.ConfigDict:
    """Import ``path`` and return its locked ``get_config()``, or ``get_config(ARG)`` for ``path.py:ARG``
    (one file for a family of variants, e.g. ``configs/sbdm_mnist_config.py:cno,laplacian``)."""
    path, argument = split_config_argument(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist (expected a .py file defining get_config())")
    spec = importlib.util.spec_from_file_location(f"infdiff_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        get_config = getattr(module, "get_config", None)
        if argument is not None and get_config is not None and not inspect.signature(get_config).parameters:
            raise ConfigError(
                f"config file {str(path)!r} takes no argument (its get_config() has none): drop ':{argument}'"
            )
        config = None if get_config is None else get_config() if argument is None else get_config(argument)
    except ConfigError:
        raise
    except Exception as error:  # the file is Python: whatever it raises is the user's error to see
        line = getattr(error, "lineno", None) or _line_in(error, path)
        at = f", line {line}" if line else ""
        raise ConfigError(f"config file {str(path)!r}{at} failed to load: {type(error).__name__}: {error}") from error
    if config is None:
        raise ConfigError(f"config file {str(path)!r} defines no get_config() function")
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"get_config() in {str(path)!r} must return an ml_collections.ConfigDict")
    config.lock()
    return config


def _line_in(error: BaseException, path: Path) -> Optional[int]:
    """The line of ``path`` where ``error`` was raised (the innermost frame in that file), if any."""
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(error.__traceback__)
        if Path(frame.filename).resolve() == path.resolve()
    ]
    return lines[-1] if lines else None


def _a(noun: str) -> str:
    """``noun`` with its indefinite article ("an int", "a float")."""
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _parse_value(text: str, current, key: str):
    """Parse ``text`` as a value of the same type as ``current`` (the field being overridden)."""
    if current is None and text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
    if isinstance(current, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"--{key}={text!r}: expected a boolean (true/false)")
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if current is None:
            return text
        raise ConfigError(f"--{key}={text!r}: expected {_a(type(current).__name__)} literal") from None
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(current, (tuple, list)) and isinstance(value, (tuple, list)):
        value = type(current)(value)
    if current is not None and not isinstance(value, type(current)):
        raise ConfigError(f"--{key}={text!r}: expected {_a(type(current).__name__)}, got {type(value).__name__}")
    return value


def _known_keys(config: ml_collections.ConfigDict, prefix: str = "") -> List[str]:
    keys = []
    for name, value in config.items():
        full = f"{prefix}{name}"
        keys.append(full)
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(_known_keys(value, full + "."))
    return keys


def resolve_key(config: ml_collections.ConfigDict, dotted_key: str, aliases: Optional[Aliases] = None) -> str:
    """``dotted_key`` itself, or what ``aliases`` maps it to when the config has no such key."""
    node = config
    for part in dotted_key.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return (aliases or {}).get(dotted_key, dotted_key)
        node = node[part]
    return dotted_key


def override(
    config: ml_collections.ConfigDict,
    dotted_key: str,
    text: str,
    flag: str = "config",
    aliases: Optional[Aliases] = None,
):
    """Set ``config.<dotted_key>`` (or its alias) from the string ``text``; unknown keys raise :class:`ConfigError`."""
    given, dotted_key = dotted_key, resolve_key(config, dotted_key, aliases)
    *parents, leaf = dotted_key.split(".")
    node = config
    for depth, part in enumerate([*parents, leaf]):
        is_leaf = depth == len(parents)
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            suggestions = difflib.get_close_matches(given, [*_known_keys(config), *(aliases or {})], n=3)
            hint = f"; did you mean {', '.join(f'--{flag}.{s}' for s in suggestions)}?" if suggestions else ""
            raise ConfigError(f"--{flag}.{given}: no such key in the config{hint}")
        if not is_leaf:
            node = node[part]
    current = node[leaf]
    if isinstance(current, ml_collections.ConfigDict):
        raise ConfigError(f"--{flag}.{dotted_key} is a section, not a value; set one of its keys")
    node[leaf] = _parse_value(text, current, f"{flag}.{dotted_key}")


Override = Tuple[str, str]


class ConfigFlags(NamedTuple):
    """What :func:`parse_config_flags` found: ``configs`` (files with overrides applied), the other
    arguments, and each config's overrides ``(key, text)`` in command-line order."""

    configs: Dict[str, ml_collections.ConfigDict]
    rest: List[str]
    overrides: Dict[str, List[Override]]


def parse_config_flags(
    argv: Sequence[str],
    names: Sequence[str] = ("config",),
    required: Sequence[str] = ("config",),
    aliases: Optional[Aliases] = None,
) -> ConfigFlags:
    """Split ``argv`` into configs ``{name: ConfigDict}`` (files + overrides) and remaining arguments.

    ``--NAME PATH`` / ``--NAME=PATH`` loads a file; ``--NAME.a.b=V`` / ``--NAME.a.b V`` overrides.
    Overrides are applied after every file is loaded, in command-line order.
    """
    files: Dict[str, str] = {}
    overrides: List[Tuple[str, str, str]] = []
    rest: List[str] = []
    args = iter(argv)
    for arg in args:
        key, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        name, dot, dotted = key.partition(".")
        if name not in names:
            rest.append(arg)
            continue
        if not eq:
            value = next(args, None)
            if value is None:
                raise ConfigError(f"{arg} expects a value")
        if dot:
            overrides.append((name, dotted, value))
        else:
            files[name] = value
    configs = {}
    for name in names:
        if name in files:
            configs[name] = load_config_file(files[name])
        elif name in required:
            raise ConfigError(f"--{name} path/to/config.py is required")
    applied: Dict[str, List[Override]] = {name: [] for name in configs}
    for name, key, value in overrides:
        if name not in configs:
            raise ConfigError(f"--{name}.{key} given but no --{name} config file")
        override(configs[name], key, value, flag=name, aliases=aliases)
        applied[name].append((key, value))
    return ConfigFlags(configs, rest, applied)


def config_to_json(config: ml_collections.ConfigDict) -> str:
    """A stable JSON dump of a config (for run directories and cache keys)."""
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)
