"""agents_bar_stream: an Agents Bar client whose step() never waits for the network.

A drop-in for the published ``agents_bar`` client: ``RemoteAgent.step()`` writes the transition to
a durable on-disk queue and returns in microseconds; a background thread delivers the queue in
order, exactly once, through any outage. ``act()`` stays synchronous and bounded by a deadline.
"""

import logging
import warnings

from agents_bar_stream import agents, exceptions  # agents: the published client's agents module
from agents_bar_stream._version import __version__
from agents_bar_stream.client import (
    Client,
    EncodedAgentState,
    RemoteAgent,
    wait_until_agent_exists,
    wait_until_agent_is_active,
)
from agents_bar_stream.config import RetryPolicy, StreamOptions, Timeouts
from agents_bar_stream.exceptions import (
    AgentExistsError,
    AgentNotFoundError,
    AgentsBarError,
    APIError,
    AuthenticationError,
    ClosedError,
    ConfigurationError,
    ConnectionFailedError,
    InvalidRequestError,
    InvalidStepError,
    PayloadTooLargeError,
    PolicyError,
    QueueFullError,
    QueueLockedError,
    RequestTimeoutError,
    ServerBusyError,
    ServiceUnavailableError,
    StorageError,
    StreamError,
    WrongServiceError,
)
from agents_bar_stream.protocol import PROTOCOL_VERSION, SUPPORTED_MODELS

__all__ = [
    "APIError",
    "AgentExistsError",
    "AgentNotFoundError",
    "AgentsBarError",
    "AuthenticationError",
    "Client",
    "ClosedError",
    "ConfigurationError",
    "ConnectionFailedError",
    "EncodedAgentState",
    "InvalidRequestError",
    "InvalidStepError",
    "PROTOCOL_VERSION",
    "PayloadTooLargeError",
    "PolicyError",
    "QueueFullError",
    "QueueLockedError",
    "RemoteAgent",
    "RequestTimeoutError",
    "RetryPolicy",
    "SUPPORTED_MODELS",
    "ServerBusyError",
    "ServiceUnavailableError",
    "StorageError",
    "StreamError",
    "StreamOptions",
    "Timeouts",
    "WrongServiceError",
    "__version__",
    "agents",
    "wait_until_agent_exists",
    "wait_until_agent_is_active",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> object:
    # Deprecated names (PEP 562): still importable from here, with the warning of their module.
    if name in exceptions._DEPRECATED:
        value, message = exceptions._DEPRECATED[name]
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
