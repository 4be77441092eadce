"""`python -m shipei` is the `shipei` command."""

import sys

from .cli import main

sys.exit(main())
