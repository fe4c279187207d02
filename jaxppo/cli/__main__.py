"""python -m jaxppo.cli COMMAND ... (the same as the jaxppo console script)."""

import sys

from jaxppo.cli import main

sys.exit(main())
