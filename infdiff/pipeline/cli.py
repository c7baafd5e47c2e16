"""Command-line plumbing shared by the top-level scripts: config flags plus ordinary options."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Dict, Optional, Sequence, Tuple

from ml_collections import ConfigDict

from infdiff.train.config import ConfigError, parse_config_flags


def parse_command_line(description: str, config_names: Sequence[str], add_options: Optional[Callable] = None,
                       argv: Optional[Sequence[str]] = None) -> Tuple[Dict[str, ConfigDict], argparse.Namespace]:
    """Configs named ``config_names`` (``--NAME file.py --NAME.key=value``) and the other options.

    Errors in configs or options end the program with status 2 and a one-line explanation.
    """
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Config flags: " + " ".join(f"--{n} path/to/config.py [--{n}.section.key=value ...]"
                                           for n in config_names))
    if add_options is not None:
        add_options(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        parser.print_help()
        raise SystemExit(0)
    try:
        configs, rest = parse_config_flags(argv, names=config_names, required=config_names)
    except ConfigError as error:
        parser.error(str(error))
    return configs, parser.parse_args(rest)
