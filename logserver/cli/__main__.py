"""`python -m logserver.cli ...`: the same entry point as the `logserver` script."""
import sys

from . import main

sys.exit(main())
