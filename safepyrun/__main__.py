"""``python -m safepyrun``: the ``safepyrun`` command."""
import sys

from .cli import main

sys.exit(main())
