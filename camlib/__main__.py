"""``python -m camlib``: see :mod:`camlib.cli`."""

import sys

from camlib.cli import main

sys.exit(main())
