import sys

from auxdpo.cli import main

sys.exit(main())
