"""``python -m hf_ddpm`` runs the ``hf-ddpm`` command line."""

import sys

from .cli import main

sys.exit(main())
