"""``python -m amanuensis.cli``."""

import sys

from amanuensis.cli import main

sys.exit(main())
