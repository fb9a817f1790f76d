"""``python -m ferry_runtime`` is ``ferry-runtime``."""

import sys

from ferry_runtime.cli import main

sys.exit(main())
