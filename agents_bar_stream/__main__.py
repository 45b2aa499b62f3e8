"""``python -m agents_bar_stream``: the same command line as ``agents-bar-stream``."""

import sys

from agents_bar_stream.cli import main

sys.exit(main())
