"""`python -m catalog <command>` (also the `catalog` console script)."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "serve":
        # The dev host lives outside catalog/ because it needs azure.functions.
        from devhost.serve import main as serve_main
        return serve_main(argv[1:])
    from .cli import main as cli_main
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
