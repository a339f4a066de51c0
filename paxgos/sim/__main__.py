"""``python -m paxgos.sim``: see ``paxgos.sim.cli``."""

from paxgos.sim.cli import main

raise SystemExit(main())
