import sys

from modelcrate.cli import main

sys.exit(main())
