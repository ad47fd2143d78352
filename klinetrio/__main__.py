"""``python -m klinetrio``."""

from __future__ import annotations

import sys

from klinetrio.cli import main

sys.exit(main())
