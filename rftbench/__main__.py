"""``python -m rftbench ...`` (also ``torchrun ... -m rftbench train CONFIG``)."""
import sys

from .cli import main

sys.exit(main())
