"""``python -m sslsteal_fast`` is ``sslsteal``."""

import sys

from sslsteal_fast.cli import main

if __name__ == "__main__":
    sys.exit(main())
