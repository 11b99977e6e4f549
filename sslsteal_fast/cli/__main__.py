"""``python -m sslsteal_fast.cli`` is ``sslsteal``."""

import sys

from sslsteal_fast.cli import main

sys.exit(main())
