"""``python -m paxgos``: see ``paxgos.cli``."""

import sys

from paxgos.cli import main

sys.exit(main())
