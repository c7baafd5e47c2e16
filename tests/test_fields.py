"""Declared config types and ranges: what each kind accepts, and the messages it gives."""

import argparse

import pytest
from ml_collections import ConfigDict

from infdiff.registry import Registry
from infdiff.train.config import ConfigError
from infdiff.train.fields import (
    AnyOf,
    Choice,
    Flag,
    Integer,
    Maybe,
    Name,
    Number,
    Schema,
    Several,
    Text,
    UndeclaredKeyWarning,
    validate,
)


@pytest.mark.parametrize(
    "field, good, bad",
    [
        (Integer(minimum=1), [1, 7], [0, -4, True, 1.0, "3", None]),
        (Number(minimum=0, maximum=1), [0, 0.5, 1, 1.0], [-0.1, 1.5, float("nan"), False]),
        (Number(above=0), [1e-9, 3], [0, 0.0, float("inf")]),
        (Number(minimum=0, below=1), [0.0, 0.99], [1.0, -1]),
        (Flag(), [True, False], [0, 1, "true", None]),
        (Text(nonempty=True), ["a"], ["", "  ", 3]),
        (Text(("no", "bf16")), ["no"], ["fp8", ""]),
        (Name(), ["shapes_32"], ["", "a/b", ".", "..", " x"]),
        (Several(Integer(minimum=1)), [(1, 2), [3]], [(), (1, "a"), (0,), 3]),
        (Several(Number(), length=2), [(0.1, 0.2)], [(0.1,), (0.1, 0.2, 0.3)]),
        (Maybe(Integer(minimum=2)), [None, 2], [1, "x"]),
        (AnyOf(Integer(minimum=1), Text(nonempty=True)), [5, "ddim25"], [0, ""]),
    ],
)
def test_each_kind_accepts_what_it_declares_and_nothing_else(field, good, bad):
    assert all(field.accepts(value) for value in good)
    assert not any(field.accepts(value) for value in bad)


def test_check_names_the_key_the_value_and_what_is_allowed():
    assert Integer(minimum=1).check(3, "--config.train.batch_size") == 3
    with pytest.raises(ConfigError, match=r"^--config.train.batch_size=True: expected an integer >= 1$"):
        Integer(minimum=1).check(True, "--config.train.batch_size")


def test_a_registry_choice_lists_the_names_registered_when_checking():
    registry = Registry("thing")
    field = Choice(registry)
    registry.register("late", object())
    assert field.accepts("late")
    with pytest.raises(ConfigError, match=r"expected one of 'late'"):
        field.check("early", "--config.x.name")


def test_as_an_argparse_type_a_field_parses_and_reports_in_argparses_format(capsys):
    parser = argparse.ArgumentParser(prog="prog")
    parser.add_argument("--count", type=Integer(minimum=1))
    parser.add_argument("--size", type=Maybe(Integer(minimum=2)))
    assert parser.parse_args(["--count", "4", "--size", "None"]) == argparse.Namespace(count=4, size=None)
    with pytest.raises(SystemExit):
        parser.parse_args(["--count", "0"])
    assert "prog: error: argument --count: expected an integer >= 1, got '0'" in capsys.readouterr().err


def test_validate_needs_the_sections_and_warns_about_undeclared_keys():
    schema = Schema({"train.batch_size": Integer(minimum=1)}, sections=("train", "model"))
    with pytest.raises(ConfigError, match=r"--config has no 'model' section"):
        validate(ConfigDict({"train": {"batch_size": 4}}), schema)
    config = ConfigDict({"train": {"batch_size": 4, "extra": 1}, "model": {}})
    with pytest.warns(UndeclaredKeyWarning, match=r"train.extra not declared"):
        validate(config, schema)
    schema.declare("train.extra", Integer(maximum=0))
    with pytest.raises(ConfigError, match=r"--latent.train.extra=1: expected an integer <= 0"):
        validate(config, schema, flag="latent")
