"""``python -m daskem``: see ``daskem.cli``."""

import sys

from daskem.cli import main

if __name__ == "__main__":  # worker processes re-import this module: run only in the parent
    sys.exit(main())
