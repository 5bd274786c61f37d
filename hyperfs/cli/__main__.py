"""`python -m hyperfs.cli`: the hyperfs command."""

import sys

from hyperfs.cli.main import main

sys.exit(main())
