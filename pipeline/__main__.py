"""`python -m pipeline` is `rtk-archive`."""

import sys

from pipeline.cli import main

sys.exit(main())
