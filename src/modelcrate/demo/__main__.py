import sys

from modelcrate.demo import run

sys.exit(run())
