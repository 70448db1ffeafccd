"""`python3 -m probe`: the same command line as the installed `probe`."""

import sys

from probe.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
