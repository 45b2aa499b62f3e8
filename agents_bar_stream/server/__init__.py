"""The self-hosted Agents Bar server (``agents-bar-stream serve``).

Only the modules of this package that serve requests import fastapi, torch and numpy
(``app``, ``learner``, ``runner.run_from_args``). Importing this package, ``process`` (the
:class:`LocalServer` helper that tests and demos use to run the server in a subprocess) or
``runner.add_arguments`` stays light, so that the client never pays for the server.
"""

__all__ = ["LocalServer"]


def __getattr__(name: str):
    # Lazy, so that ``import agents_bar_stream.server`` does not even import subprocess machinery.
    if name == "LocalServer":
        from agents_bar_stream.server.process import LocalServer

        return LocalServer
    raise AttributeError(name)
