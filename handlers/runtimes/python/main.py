"""What a container of the Python runtime runs: the wrapper (runtime.py) is imported, not run as
a script, so the bytecode faasd compiled for it when the runtime was added is used."""

import sys

import runtime

sys.exit(runtime.main(sys.argv))
