import sys

from lrtdense.cli import main

sys.exit(main())
