"""``python -m bot``: the same as the ``charbot`` command."""

import sys

from bot.cli import main

sys.exit(main())
