"""``python -m sshmonitord.cli`` is ``sshmonitor``."""

import sys

from . import main

sys.exit(main())
