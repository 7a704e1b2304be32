"""``python -m sshmonitord`` runs the daemon, like the ``sshmonitord`` command."""

import sys

from .cli.daemon import daemon_main

sys.exit(daemon_main())
