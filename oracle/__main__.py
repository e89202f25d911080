"""``python -m gradoracle``: the same command line as the ``gradoracle`` console script."""

import sys

from gradoracle.cli import main

sys.exit(main())
