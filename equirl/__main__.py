import sys

from equirl.cli import main

sys.exit(main())
