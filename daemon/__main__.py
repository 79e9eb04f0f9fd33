"""`python -m daemon` is `postroom`."""

import sys

from daemon.cli import main

sys.exit(main())
