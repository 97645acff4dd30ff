"""`python -m catalog <command>` (also the `catalog` console script)."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "serve":
        # The dev host lives outside catalog/ (it needs azure.functions and an HTTP server): this
        # entry point is the only catalog module that knows it exists.
        try:
            from devhost.serve import main as serve_main
        except ModuleNotFoundError as e:
            print(f"catalog serve: {e.name} is not installed; install the dev host's dependencies with "
                  "pip install 'az-table-catalog-functions[serve]'", file=sys.stderr)
            return 2
        return serve_main(argv[1:])
    from .tools.cli import main as cli_main
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
