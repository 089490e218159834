"""``python -m gleitzeit.service``: the same as the ``gleitzeit-service`` command."""

import sys

from .cli import main

sys.exit(main())
