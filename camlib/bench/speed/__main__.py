"""``python -m camlib.bench.speed ...``: the same as ``python -m camlib.bench speed ...`` (the memory
probes start their subprocesses this way)."""

import sys

from camlib.bench.speed.cli import main

sys.exit(main())
