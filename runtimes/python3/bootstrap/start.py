"""Starts Strata's Python bootstrap. Python compiles the file it is asked to run at every start
but loads an imported module from its `__pycache__`, which the runtime's image build writes: so
this file only imports the bootstrap (`strata_bootstrap.py`, next to it) and runs it."""

import strata_bootstrap

strata_bootstrap.run()
