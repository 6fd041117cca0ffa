"""`python -m pipeline` is `rtk-archive`."""

import sys

from pipeline.cli.app import main

sys.exit(main())
