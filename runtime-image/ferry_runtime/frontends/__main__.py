"""``python -m ferry_runtime.frontends``: one front-end process (started by the runtime)."""

import sys

from ferry_runtime.frontends.process import main

sys.exit(main())
