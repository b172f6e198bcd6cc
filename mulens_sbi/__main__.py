"""``python -m mulens_sbi``: the ``mulens-sbi`` command line without an installed entry point."""

import sys

from mulens_sbi.cli import main

if __name__ == "__main__":
    sys.exit(main())
