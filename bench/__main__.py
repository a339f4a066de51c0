"""``python -m bench``: the phased benchmark; see ``bench.run``."""

import sys

from bench.run import main

sys.exit(main())
