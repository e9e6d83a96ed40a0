"""``python -m sim`` is ``ocsim sim``."""

import sys

from sim.cli import main

sys.exit(main())
