"""Command-line plumbing shared by the top-level scripts: config flags plus ordinary options.

Configs are given as ``--NAME file.py --NAME.key=value`` (∞-Diff's spellings of keys work,
:mod:`infdiff.pipeline.legacy_keys`).  A config that names an already trained run (stage 1 for
stage 2 and generation) is replaced by that run's saved config with the command line's overrides on
top (:func:`~infdiff.pipeline.runs.saved_run_config`), so the training overrides need not be repeated.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

from accelerate import PartialState
from ml_collections import ConfigDict

from infdiff.data import DataError
from infdiff.diffusion import SAMPLERS
from infdiff.diffusion.posterior import VARIANCES
from infdiff.metrics import ExtractorUnavailable
from infdiff.pipeline.build import SamplerSpec
from infdiff.pipeline.legacy_keys import LEGACY_KEYS
from infdiff.pipeline.runs import saved_run_config
from infdiff.pipeline.schema import SAMPLING_OPTIONS, validate_config
from infdiff.train.config import ConfigError, parse_config_flags

STAGE_SCRIPTS = {"stage1": "train_inf_ae_diffusion.py", "stage2": "train_latent_diffusion.py"}


@contextlib.contextmanager
def one_line_errors(program: str):
    """Inside it, a bad setting found after parsing (a config key, a data file, a missing extractor) ends the
    program with status 2 and one line naming it, as a parsing error does; Ctrl-C ends it with status 130
    and one line instead of a traceback."""
    try:
        yield
    except (ConfigError, DataError, FileNotFoundError, ExtractorUnavailable) as error:
        sys.stderr.write(f"{program}: error: {error}\n")
        raise SystemExit(2) from None
    except KeyboardInterrupt as interrupt:
        sys.stderr.write(f"{program}: {str(interrupt) or 'interrupted'}\n")
        raise SystemExit(130) from None


def add_sampler_option(parser: argparse.ArgumentParser, default: Optional[str] = None) -> None:
    """``--sampler NAME`` with the registered samplers as choices (default: the config's) and DDPM's ``--variance``."""
    parser.add_argument(
        "--sampler",
        choices=SAMPLERS.names(),
        default=default,
        help="decoder sampler (default: the stage-1 config's sampler.name)" if default is None else "decoder sampler",
    )
    parser.add_argument("--variance", choices=VARIANCES, default=None, help="the ddpm sampler's posterior variance")


def add_sampling_options(parser: argparse.ArgumentParser, num_samples: int = 16) -> None:
    """The options of sampling a trained two-stage model, shared by ``generate_samples.py`` and ``calculate_fid.py``."""
    option = SAMPLING_OPTIONS
    parser.add_argument(
        "--sample_img_size", type=option["sample_img_size"], default=None, help="output size (default: training size)"
    )
    parser.add_argument("--sampling_steps", type=option["sampling_steps"], default=100, help="decoder diffusion steps")
    parser.add_argument("--num_samples", type=option["num_samples"], default=num_samples)
    parser.add_argument("--batch_size", type=option["batch_size"], default=16)
    parser.add_argument("--seed", type=option["seed"], default=0)
    add_sampler_option(parser)
    parser.add_argument(
        "--latent_sampler",
        choices=SAMPLERS.names(),
        default=None,
        help="latent sampler (default: the stage-2 config's; the paper's: ddpm, 1000 steps)",
    )
    parser.add_argument("--latent_sampling_steps", type=option["latent_sampling_steps"], default=None)
    parser.add_argument(
        "--inv_snr",
        type=option["inv_snr"],
        default=None,
        help="Wiener regulariser for deblurring the mollified samples (default: the prior's, 0.05)",
    )


def latent_sampler_option(args: argparse.Namespace, latent_config: Optional[ConfigDict]) -> Optional[SamplerSpec]:
    """The latent sampler the ``--latent_sampler`` / ``--latent_sampling_steps`` flags ask for, or ``None``."""
    if latent_config is None or (args.latent_sampler is None and args.latent_sampling_steps is None):
        return None
    return SamplerSpec.from_section(latent_config.sampler, "sampler", args.latent_sampler, args.latent_sampling_steps)


def sampling_arguments(args: argparse.Namespace, latent_config: Optional[ConfigDict]) -> dict:
    """The keyword arguments :func:`add_sampling_options` gives ``generate_samples`` and ``calculate_fid`` alike."""
    return dict(
        num_samples=args.num_samples,
        sample_img_size=args.sample_img_size,
        sampling_steps=args.sampling_steps,
        batch_size=args.batch_size,
        seed=args.seed,
        sampler=args.sampler,
        variance=args.variance,
        latent=latent_sampler_option(args, latent_config),
        inv_snr=args.inv_snr,
    )


def parse_command_line(
    description: str,
    config_names: Sequence[str],
    add_options: Optional[Callable] = None,
    argv: Optional[Sequence[str]] = None,
    trained: Optional[Mapping[str, str]] = None,
    optional: Sequence[str] = (),
) -> Tuple[Dict[str, ConfigDict], argparse.Namespace]:
    """Configs named ``config_names`` (``--NAME file.py --NAME.key=value``) and the other options.

    ``trained`` maps the names of configs that refer to trained runs to the script that trains
    them; those are resolved to the runs' saved configs.  Configs named in ``optional`` may be left out.  Errors in configs or options end the
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
        required = [name for name in config_names if name not in optional]
        configs, rest, overrides = parse_config_flags(argv, names=config_names, required=required, aliases=LEGACY_KEYS)
        for name, script in (trained or {}).items():
            if name in configs:
                configs[name] = saved_run_config(configs[name], overrides[name], flag=name, script=script)
        for name, config in configs.items():
            validate_config(config, flag=name)
    except (ConfigError, FileNotFoundError) as error:
        parser.error(str(error))
    return configs, parser.parse_args(rest)


def parse_trained_runs(
    description: str,
    add_options: Optional[Callable] = None,
    argv: Optional[Sequence[str]] = None,
    optional: Sequence[str] = (),
) -> Tuple[Dict[str, ConfigDict], argparse.Namespace]:
    """:func:`parse_command_line` for scripts that use a trained two-stage model: ``--config`` (the stage-2 run)
    and ``--decoder_config`` (the stage-1 run), both resolved to their runs' saved configs."""
    trained = {"config": STAGE_SCRIPTS["stage2"], "decoder_config": STAGE_SCRIPTS["stage1"]}
    return parse_command_line(description, list(trained), add_options, argv, trained=trained, optional=optional)


def say_once(line: str) -> None:
    """Print ``line`` from the main process only (under torchrun every process runs the script)."""
    if PartialState().is_main_process:
        print(line)
