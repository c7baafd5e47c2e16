"""Command-line plumbing shared by the top-level scripts: config flags plus ordinary options.

Configs are given as ``--NAME file.py --NAME.key=value`` (∞-Diff's spellings of keys work,
:mod:`infdiff.pipeline.legacy_keys`).  A config that names an already trained run (stage 1 for
stage 2 and generation) is replaced by that run's saved config with the command line's overrides on
top (:func:`~infdiff.pipeline.runs.saved_run_config`), so the training overrides need not be repeated.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

from ml_collections import ConfigDict

from infdiff.diffusion import SAMPLERS
from infdiff.pipeline.legacy_keys import LEGACY_KEYS
from infdiff.pipeline.runs import saved_run_config
from infdiff.train.config import ConfigError, parse_config_flags

STAGE_SCRIPTS = {"stage1": "train_inf_ae_diffusion.py", "stage2": "train_latent_diffusion.py"}


def add_sampler_option(parser: argparse.ArgumentParser, default: Optional[str] = None) -> None:
    """``--sampler NAME`` with the registered samplers as choices (default: the config's)."""
    parser.add_argument(
        "--sampler",
        choices=SAMPLERS.names(),
        default=default,
        help="decoder sampler (default: the stage-1 config's sampler.name)" if default is None else "decoder sampler",
    )


def parse_command_line(
    description: str,
    config_names: Sequence[str],
    add_options: Optional[Callable] = None,
    argv: Optional[Sequence[str]] = None,
    trained: Optional[Mapping[str, str]] = None,
) -> Tuple[Dict[str, ConfigDict], argparse.Namespace]:
    """Configs named ``config_names`` (``--NAME file.py --NAME.key=value``) and the other options.

    ``trained`` maps the names of configs that refer to trained runs to the script that trains
    them; those are resolved to the runs' saved configs.  Errors in configs or options end the
    program with status 2 and a one-line explanation.
    """
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Config flags: "
        + " ".join(f"--{n} path/to/config.py [--{n}.section.key=value ...]" for n in config_names),
    )
    if add_options is not None:
        add_options(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        parser.print_help()
        raise SystemExit(0)
    try:
        configs, rest, overrides = parse_config_flags(
            argv, names=config_names, required=config_names, aliases=LEGACY_KEYS
        )
        for name, script in (trained or {}).items():
            configs[name] = saved_run_config(configs[name], overrides[name], flag=name, script=script)
    except (ConfigError, FileNotFoundError) as error:
        parser.error(str(error))
    return configs, parser.parse_args(rest)
