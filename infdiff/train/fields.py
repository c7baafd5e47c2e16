"""Declared types and ranges of config values and command-line options, checked before anything is built.

A :class:`Field` says what a value may be (``Integer(minimum=1)``, ``Number(above=0)``,
``Choice(registry)``, ...).  :meth:`Field.check` returns the value or raises :class:`ConfigError`
naming the key, the value and what is allowed; used as an ``argparse`` ``type=``, a field parses
the option's text and reports the same in argparse's own format.  :func:`validate` checks every
value of a config against a :class:`Schema` of dotted keys.
"""

from __future__ import annotations

import argparse
import ast
import math
import os
import warnings
from typing import Any, Callable, Dict, Iterable, Iterator, Mapping, Optional, Sequence, Tuple

from ml_collections import ConfigDict

from infdiff.train.config import ConfigError


class UndeclaredKeyWarning(UserWarning):
    """A config key that no schema declares, so its type and range are not checked."""


class Field:
    """One kind of value; subclasses say what is allowed in :attr:`expected` and test it in :meth:`accepts`."""

    expected = "a value"

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def check(self, value: Any, key: str) -> Any:
        """``value`` if it is allowed, else a :class:`ConfigError` ``"key=value: expected ..."``."""
        if not self.accepts(value):
            raise ConfigError(f"{key}={value!r}: expected {self.expected}")
        return value

    def parse(self, text: str) -> Any:
        """The value of an option's text (a Python literal, or the text itself)."""
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text

    def __call__(self, text: str) -> Any:
        """``argparse`` ``type=``: the parsed, checked value of ``text``."""
        value = self.parse(text)
        if not self.accepts(value):
            raise argparse.ArgumentTypeError(f"expected {self.expected}, got {text!r}")
        return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bounds(minimum, maximum, above, below) -> str:
    parts = [f">= {minimum}" if minimum is not None else None, f"> {above}" if above is not None else None]
    parts += [f"<= {maximum}" if maximum is not None else None, f"< {below}" if below is not None else None]
    return " and ".join(p for p in parts if p)


class Number(Field):
    """A finite int or float (never a bool) within the given bounds (``above``/``below``: strict)."""

    def __init__(self, minimum=None, maximum=None, above=None, below=None, integer: bool = False):
        self.minimum, self.maximum, self.above, self.below, self.integer = minimum, maximum, above, below, integer
        bounds = _bounds(minimum, maximum, above, below)
        self.expected = ("an integer" if integer else "a number") + (f" {bounds}" if bounds else "")

    def accepts(self, value: Any) -> bool:
        if not _number(value) or (self.integer and not isinstance(value, int)):
            return False
        return not (
            (self.minimum is not None and value < self.minimum)
            or (self.maximum is not None and value > self.maximum)
            or (self.above is not None and value <= self.above)
            or (self.below is not None and value >= self.below)
        )


class Integer(Number):
    """An int (never a bool) from ``minimum`` to ``maximum``."""

    def __init__(self, minimum=None, maximum=None):
        super().__init__(minimum, maximum, integer=True)


class Flag(Field):
    """``True`` or ``False``."""

    expected = "true or false"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)

    def parse(self, text: str) -> Any:
        return {"true": True, "false": False}.get(text.strip().lower(), text)


class OneOf(Field):
    """Exactly one of ``values`` (``True`` is not ``1``)."""

    def __init__(self, *values):
        self.values = values
        self.expected = f"one of {', '.join(map(repr, values))}"

    def accepts(self, value: Any) -> bool:
        return any(type(value) is type(v) and value == v for v in self.values)


class Text(Field):
    """A string; with ``choices`` (names, or a callable giving them, e.g. a registry's ``names``) one of those."""

    def __init__(self, choices: Optional[Callable[[], Iterable[str]] | Sequence[str]] = None, nonempty: bool = False):
        self.choices, self.nonempty = choices, nonempty

    def names(self) -> Optional[list]:
        if self.choices is None:
            return None
        return list(self.choices() if callable(self.choices) else self.choices)

    @property
    def expected(self) -> str:
        names = self.names()
        if names is not None:
            return f"one of {', '.join(map(repr, names))}"
        return "a non-empty string" if self.nonempty else "a string"

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, str) or (self.nonempty and not value.strip()):
            return False
        names = self.names()
        return names is None or value in names

    def parse(self, text: str) -> Any:
        return text


class Choice(Text):
    """The name of an entry of ``registry`` (anything with ``names()``), read when checking."""

    def __init__(self, registry):
        super().__init__(registry.names)


class Name(Text):
    """A plain name for a folder inside another one: non-empty, no path separator, not ``.`` or ``..``."""

    expected = "a non-empty name without '/' (a folder inside run.output_dir)"

    def accepts(self, value: Any) -> bool:
        return (
            isinstance(value, str)
            and value.strip() == value != ""
            and value not in (".", "..")
            and not any(sep and sep in value for sep in (os.sep, os.altsep))
        )


class Several(Field):
    """A tuple or list of ``item`` values, ``nonempty`` unless allowed, of ``length`` when given."""

    def __init__(self, item: Field, length: Optional[int] = None, nonempty: bool = True):
        self.item, self.length, self.nonempty = item, length, nonempty
        count = f"{length} " if length else ("one or more " if nonempty else "")
        self.expected = f"a tuple of {count}values, each {item.expected}"

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, (tuple, list)) or (self.nonempty and not value):
            return False
        if self.length is not None and len(value) != self.length:
            return False
        return all(self.item.accepts(v) for v in value)


class Maybe(Field):
    """``None`` (unset: the default of what reads it) or a ``field`` value."""

    def __init__(self, field: Field):
        self.field = field

    @property
    def expected(self) -> str:
        return f"{self.field.expected}, or None (unset)"

    def accepts(self, value: Any) -> bool:
        return value is None or self.field.accepts(value)


class AnyOf(Field):
    """A value any of ``fields`` accepts."""

    def __init__(self, *fields: Field):
        self.fields = fields

    @property
    def expected(self) -> str:
        return " or ".join(f.expected for f in self.fields)

    def accepts(self, value: Any) -> bool:
        return any(f.accepts(value) for f in self.fields)


class Schema:
    """Dotted config keys → :class:`Field`, plus the sections every config of its kind must have.

    Model families with keys of their own add them with :meth:`declare`.
    """

    def __init__(self, fields: Mapping[str, Field], sections: Sequence[str] = ()):
        self.fields: Dict[str, Field] = dict(fields)
        self.sections = tuple(sections)

    def declare(self, key: str, field: Field) -> None:
        """Check ``key`` against ``field`` from now on."""
        self.fields[key] = field

    def undeclare(self, key: str) -> None:
        """Stop checking ``key`` (a family that unregisters its pieces removes its keys too)."""
        del self.fields[key]

    def __contains__(self, key: str) -> bool:
        return key in self.fields

    def __getitem__(self, key: str) -> Field:
        return self.fields[key]


def _leaves(config: Mapping, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    for key, value in config.items():
        if isinstance(value, (ConfigDict, dict)):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def validate(config: Mapping, schema: Schema, flag: str = "config", source: str = "") -> None:
    """Check that ``config`` has the schema's sections and that each value is what its key declares.

    Errors name the key as the command line spells it (``--{flag}.key=value``) and, for a missing
    section, the config ``source``; keys the schema does not declare warn with
    :class:`UndeclaredKeyWarning`.
    """
    where = f" ({source})" if source else ""
    missing = [section for section in schema.sections if not isinstance(config.get(section), (ConfigDict, dict))]
    if missing:
        raise ConfigError(
            f"--{flag}{where} has no {', '.join(repr(s) for s in missing)} section; a config needs the sections "
            f"{', '.join(schema.sections)} (start from infdiff.pipeline.default_configs)"
        )
    undeclared = []
    for key, value in _leaves(config):
        if key in schema:
            schema[key].check(value, f"--{flag}.{key}")
        else:
            undeclared.append(key)
    if undeclared:
        warnings.warn(
            f"--{flag}: {', '.join(undeclared)} not declared in the config schema, so not checked before building",
            UndeclaredKeyWarning,
            stacklevel=2,
        )
