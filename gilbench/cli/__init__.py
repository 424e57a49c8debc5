"""Command-line code: ``main`` (the ``gilbench`` console script) and one module per subcommand family.

``flags`` holds what several commands share (seed lists, judge options, error handling); ``fields`` the config
field docs shown by ``--help`` and ``gilbench ls``. Library code never imports this package.
"""

from gilbench.cli.flags import parse_seeds
from gilbench.cli.main import main, make_parser
from gilbench.cli.run import build_configs

__all__ = ["build_configs", "main", "make_parser", "parse_seeds"]
