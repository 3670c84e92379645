"""``python -m scheduler`` is the ``accel`` CLI."""

import sys

from scheduler.cli import main

sys.exit(main())
