"""``python -m spikeforge`` is the ``spikeforge`` command.

A worker of ``spikeforge train --nproc`` leaves without the interpreter's teardown: a gloo
thread still joinable when the C++ destructors run aborts the process ("terminate called
without an active exception", SIGABRT) after its work is done and written.
"""

import os
import sys

from . import worker
from .cli import main

status = main()
if worker.launched():
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
sys.exit(status)
