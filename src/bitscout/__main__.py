import sys

from bitscout.cli import main

sys.exit(main())
