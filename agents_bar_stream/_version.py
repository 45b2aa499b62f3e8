"""The package's version, in a module of its own: the transport names it in its User-Agent without
importing the package (whose __init__ imports the client, a layer above the transport)."""

__version__ = "0.1.0"
