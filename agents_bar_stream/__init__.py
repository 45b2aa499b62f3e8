"""agents_bar_stream: an Agents Bar client whose step() never waits for the network."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
