"""Turn config sections into objects, so scripts, tests and benchmarks build them alike.

A section is the keyword arguments of what it builds plus its registry name (``name``, or
``arch`` for ``model``): :func:`build_section` resolves the name, passes the section's other keys
and whatever the stage derives (``train_size`` from ``data.img_size``, the ``prior`` of a
process, the ``process`` of a loss, ``channels`` of the data), warns about keys the entry does not
take, and turns a bad value into a :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

import torch
from ml_collections import ConfigDict

from infdiff.diffusion import LOSSES, PRIORS, PROCESSES, SAMPLERS, DiffusionProcess, NoisePrior
from infdiff.nn import ARCHS
import infdiff.sbdm  # noqa: F401, E402  (registers the score SDEs and their samplers)
from infdiff.registry import Registry, RegistryError
from infdiff.train.config import ConfigError


SAMPLER_ARGUMENTS = {"denoise_fn", "x_T", "process", "steps", "generator", "progress"}  # what every sampler takes


class ConfigKeyWarning(UserWarning):
    """A config key the named entry of its section does not take (it is ignored)."""


def _plain(value: Any) -> Any:
    """Config values as plain Python (nested sections as dicts)."""
    return value.to_dict() if isinstance(value, ConfigDict) else value


def _parameters(entry) -> Optional[set]:
    """The keyword arguments ``entry`` takes, or ``None`` when it takes any (``**kwargs``)."""
    params = inspect.signature(entry).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _keyed(path: str, keys, error: Exception, kind: str, name: str) -> ConfigError:
    """``error`` as a :class:`ConfigError` naming the full key when its message starts with one."""
    message = str(error)
    if any(message.startswith(f"{key}=") or message.startswith(f"{key}.") for key in keys):
        return ConfigError(f"{path}.{message}")
    return ConfigError(f"{path} ({kind} {name!r}): {message}")


def build_section(registry: Registry, section: Mapping[str, Any], path: str, name_key: str = "name", **derived) -> Any:
    """``registry[section[name_key]](**rest of section, **derived)`` with config-level errors.

    ``derived`` holds what the stage computes; an entry gets those of them it takes.
    """
    name = section.get(name_key)
    try:
        entry = registry[name]
    except RegistryError as error:
        raise ConfigError(f"{path}.{name_key}={name!r}: {error}") from None
    kwargs = {key: _plain(value) for key, value in section.items() if key != name_key}
    accepted = _parameters(entry)
    if accepted is not None:
        ignored = sorted(set(kwargs) - accepted)
        if ignored:
            warnings.warn(
                f"{', '.join(f'{path}.{key}' for key in ignored)}: not taken by {registry.kind} {name!r} "
                f"(ignored); it takes {', '.join(sorted(accepted - set(derived)))}",
                ConfigKeyWarning,
                stacklevel=2,
            )
            kwargs = {key: value for key, value in kwargs.items() if key in accepted}
        derived = {key: value for key, value in derived.items() if key in accepted}
    try:
        return entry(**kwargs, **derived)
    except (TypeError, ValueError) as error:
        raise _keyed(path, kwargs, error, registry.kind, name) from error


def train_size(config: ConfigDict) -> Optional[int]:
    """The training grid's side (``data.img_size``), or ``None`` for vector data (latents)."""
    return config.data.get("img_size", None)


def build_prior(config: ConfigDict) -> NoisePrior:
    """The noise prior of ``config.prior`` on the training grid."""
    return build_section(PRIORS, config.prior, "prior", train_size=train_size(config))


def build_process(config: ConfigDict) -> DiffusionProcess:
    """The forward process of ``config.process`` with the prior of ``config.prior``."""
    return build_section(PROCESSES, config.process, "process", prior=build_prior(config))


def build_loss(config: ConfigDict, process: DiffusionProcess):
    """The loss of ``config.loss`` for ``process`` (pixel counts checked against the training grid)."""
    return build_section(LOSSES, config.loss, "loss", process=process, train_size=train_size(config))


def build_model(config: ConfigDict, **derived) -> torch.nn.Module:
    """The network of ``config.model`` (``arch``), given what the stage derives from its data."""
    return build_section(ARCHS, config.model, "model", name_key="arch", **derived)


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler by name with its number of ``steps`` and its own options (e.g. DDIM's ``eta``)."""

    name: str
    steps: Any
    options: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_section(
        cls,
        section: Mapping[str, Any],
        path: str = "sampler",
        name: Optional[str] = None,
        steps: Any = None,
        options: Optional[Mapping[str, Any]] = None,
    ) -> "SamplerSpec":
        """The ``sampler`` section, with ``name`` / ``steps`` / ``options`` replaced when given (command-line
        flags).  Section options the chosen sampler does not take are dropped (with a warning if the
        section's own sampler was kept); an explicit option it does not take is an error."""
        chosen = name or section["name"]
        try:
            function = SAMPLERS[chosen]
        except RegistryError as error:
            raise ConfigError(f"{path}.name={chosen!r}: {error}") from None
        accepted = (_parameters(function) or set()) - SAMPLER_ARGUMENTS
        given = {key: _plain(value) for key, value in section.items() if key not in ("name", "steps")}
        ignored = sorted(set(given) - accepted)
        if ignored and chosen == section["name"]:
            warnings.warn(
                f"{', '.join(f'{path}.{key}' for key in ignored)}: not taken by sampler {chosen!r} (ignored)",
                ConfigKeyWarning,
                stacklevel=2,
            )
        explicit = dict(options or {})
        refused = sorted(set(explicit) - accepted)
        if refused:
            raise ConfigError(f"sampler {chosen!r} takes no {', '.join(refused)}; its options: {sorted(accepted)}")
        kept = {key: value for key, value in given.items() if key in accepted}
        return cls(chosen, section["steps"] if steps is None else steps, {**kept, **explicit})

    def __call__(
        self,
        denoise,
        x_T: torch.Tensor,
        process: DiffusionProcess,
        generator: Optional[torch.Generator] = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Run the sampler from ``x_T``; returns the final clean state."""
        return SAMPLERS[self.name](
            denoise, x_T, process, self.steps, generator=generator, progress=progress, **self.options
        )
