"""``python -m qga_libvirt.cli``: the same as ``qga``."""

import sys

from .app import main

sys.exit(main())
