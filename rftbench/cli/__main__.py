"""``python -m rftbench.cli ...``: the same as the ``rftbench`` command."""
import sys

from . import main

sys.exit(main())
