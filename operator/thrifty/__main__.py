"""``python -m thrifty``: the ``thrifty`` command, for when its script is not on PATH."""

import sys

from thrifty.cli import main

sys.exit(main())
