import sys

from streamtrack.cli import main

sys.exit(main())
