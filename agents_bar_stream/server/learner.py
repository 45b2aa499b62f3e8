"""ai-traineree agents, one learner thread per agent, and their weights on disk.

Learning is decoupled from ingestion: ``POST /steps`` only appends to the durable log (see
``store.py``); each agent's learner thread reads the log beyond its cursor and feeds
``agent.step`` at whatever pace the CPU allows. The cursor is saved with the weights, so after
a restart learning resumes where the last save left it (the few steps learned after that save
are learned again: learning is at-least-once, delivery stays exactly-once).

``act`` and the learner share the agent under one lock per agent: torch modules are not safe to
run forward and backward passes on from two threads at once.
"""

from __future__ import annotations

import gc
import io
import logging
import math
import os
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from agents_bar_stream.protocol import is_discrete
from agents_bar_stream.server.arrays import to_float32
from agents_bar_stream.server.curves import EpisodeReturns, SampleRing
from agents_bar_stream.server.policy_export import (
    PolicyExport,
    exploration_of,
    export_module,
    policy_module,
    policy_version,
)
from agents_bar_stream.server.store import AgentRow, Store

__all__ = [
    "AgentBusy",
    "AgentDeleted",
    "AgentFailure",
    "AgentRuntime",
    "ConfigError",
    "Learners",
    "NetworkFormatError",
    "step_bytes",
    "validate_config",
]

logger = logging.getLogger(__name__)

# The server shares a small machine with its clients: one torch thread per process is plenty for
# these networks, and more only makes the learners fight the request threads for the cores.
torch.set_num_threads(1)
# ai-traineree's PPO logs a warning per early-stopped update: thousands per minute of streaming.
logging.getLogger("PPO").setLevel(logging.ERROR)

# 65,536 numbers: a 256x256 frame, or 84x84x4 (28,224) with room (issue 12). The costs that grow
# with it are capped on their own: weights (MAX_NETWORK_PARAMETERS), a learning step
# (MAX_UPDATE_COST), a replay buffer or a rollout in bytes (MAX_BUFFER_BYTES), a JSON act or step
# body (inputs.json_body_limit), a page of the log (limits.MAX_LOG_NUMBERS).
MAX_OBS_SIZE = 65_536
MAX_ACTION_SIZE = 1024
# What one ~150-byte create may cost. Weights of one network (a 1024-wide rainbow with 201 atoms
# and 1024 actions would be ~210M parameters, 4 GB with its target net and optimizer):
MAX_NETWORK_PARAMETERS = 4_000_000
# Multiply-adds of one learning step (weights x samples x updates): a learning step runs under the
# agent's lock, which act() waits for (ACT_LOCK_TIMEOUT, 2 s), so it must stay well under that on
# one busy core. Measured here: a DQN at 4e9 (3 x 1024 units, batch 1900) takes 1.3 s per step;
# the 1.3e10 of issue 9 (4 x 1024, batch 4096) took 4.2 s, and act answered 503 half the time.
# A PPO of Humanoid's size (376 inputs, 256x256, 10 updates) fits with rollouts of 1024 (~3.4e9).
# docs/protocol.md states this number; tests/server/test_server_hardening.py checks that it does.
MAX_UPDATE_COST = 4_000_000_000
# Bytes a full replay buffer (DQN, Rainbow, DDPG) or a PPO rollout may take in the server's memory.
# ai-traineree keeps each step's obs and next_obs as float32 arrays (PPO's rollout: obs only) plus
# Python objects around them; measured with tracemalloc on ai-traineree 0.9.0 (issue 12): DQN and
# Rainbow ~1,180 bytes a step beside the arrays, DDPG ~680, PPO ~1,500 (torch tensors, which
# tracemalloc cannot see, counted from the RSS). The library's defaults for usual observation
# sizes pass (DDPG on Reacher: 10^6 steps of 33 numbers, ~1 GB); 100k camera frames (22 GB) do not.
MAX_BUFFER_BYTES = 2 * 2**30
_STEP_OVERHEAD_BYTES = {"dqn": 1_200, "rainbow": 1_200, "ddpg": 700, "ppo": 4_096}
# Hidden layers and batch sizes that ai-traineree 0.9.0 uses when a config does not say.
_DEFAULT_LAYERS = {"dqn": [64, 64], "rainbow": [100, 100], "ddpg": [64, 64], "ppo": [128, 128]}
_DEFAULT_BATCH = {"dqn": 64, "rainbow": 80, "ddpg": 64, "ppo": 48}
_DEFAULT_BUFFER = {"dqn": 100_000, "rainbow": 100_000, "ddpg": 1_000_000}
_DEFAULT_ROLLOUT = 48
# obs_dtype: the numpy name a client may declare, and the dtype string of the wire it stands for.
OBS_DTYPES = {"uint8": "|u1", "int8": "|i1", "int16": "<i2", "int32": "<i4", "int64": "<i8",
              "float16": "<f2", "float32": "<f4", "float64": "<f8"}
#: Seconds act() waits for the learner to finish its current update before answering 503.
ACT_LOCK_TIMEOUT = 2.0
#: Seconds between two log lines about steps an agent failed to learn from (the count is kept).
LEARN_ERROR_LOG_INTERVAL = 60.0
#: Steps the learner reads from the log per query.
LEARN_CHUNK = 256
#: Seconds between weight saves of an agent that has learned something since the last one.
DEFAULT_SAVE_INTERVAL = 30.0
#: Policy versions whose weights generation an agent remembers, for policy_lag (the latest ones).
POLICY_VERSIONS_KEPT = 256
#: Learnt steps that carried a policy_version over which policy_lag is reported (the latest ones).
POLICY_LAG_WINDOW = 1000
# The optimizer of the network that the exported policy reads (policy_export.policy_module): a
# step of it is a change of the policy's weights. Critic and target updates are not.
_POLICY_OPTIMIZER = {"dqn": "optimizer", "rainbow": "optimizer", "ddpg": "actor_optimizer", "ppo": "actor_opt"}
_TORCH_ZIP_MAGIC = b"PK\x03\x04"
# Integer buffers a network may carry (e.g. BatchNorm's num_batches_tracked); weights are floats.
_INTEGER_DTYPES = frozenset({torch.int64, torch.int32})


class ConfigError(ValueError):
    """A bad agent config or hyperparameter; the message is the ``detail`` of a 422."""


class AgentFailure(RuntimeError):
    """The agent itself failed (e.g. diverged weights); not the caller's fault."""


class AgentDeleted(LookupError):
    """The agent was deleted while it was being built."""


class AgentBusy(AgentFailure):
    """The agent is in a long learning step; the caller should try again shortly."""


class NetworkFormatError(ValueError):
    """Network bytes that are not a torch state dict of this agent (or are a pickle)."""


# -- hyperparameters -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Param:
    kind: str  # "float", "int", "bool" or "layers"
    low: float = -math.inf
    high: float = math.inf

    def check(self, name: str, value: Any) -> Any:
        if self.kind == "bool":
            if type(value) is not bool:
                raise ConfigError(f"config.{name} must be true or false")
            return value
        if self.kind == "layers":
            if type(value) is not list or not 1 <= len(value) <= 4 or any(type(v) is not int for v in value):
                raise ConfigError(f"config.{name} must be a list of 1 to 4 integers")
            if any(not 1 <= v <= 1024 for v in value):
                raise ConfigError(f"config.{name}: each layer must have 1 to 1024 units")
            return list(value)
        if type(value) is bool or not isinstance(value, (int, float)):
            raise ConfigError(f"config.{name} must be a number")
        if self.kind == "int":
            if isinstance(value, float):
                if not value.is_integer():
                    raise ConfigError(f"config.{name} must be an integer")
                value = int(value)
        elif not math.isfinite(value):
            raise ConfigError(f"config.{name} must be finite")
        if not self.low <= value <= self.high:
            raise ConfigError(f"config.{name} must be between {self.low:g} and {self.high:g}")
        return int(value) if self.kind == "int" else float(value)


_UNIT = _Param("float", 0.0, 1.0)
_LR = _Param("float", 1e-8, 1.0)
_GRAD = _Param("float", 1e-6, 1e6)
_COMMON = {
    "seed": _Param("int", 0, 2**31 - 1),
    "gamma": _UNIT,
    "hidden_layers": _Param("layers"),
    "batch_size": _Param("int", 1, 4096),
}
_REPLAY = {
    "tau": _UNIT,
    "buffer_size": _Param("int", 1, 1_000_000),
    "warm_up": _Param("int", 0, 1_000_000),
    "update_freq": _Param("int", 1, 10_000),
    "number_updates": _Param("int", 1, 100),
}
_Q = {
    **_COMMON,
    **_REPLAY,
    "lr": _LR,
    "max_grad_norm": _GRAD,
    "using_double_q": _Param("bool"),
    "n_steps": _Param("int", 1, 100),
}
HYPERPARAMETERS: dict[str, dict[str, _Param]] = {
    "dqn": _Q,
    "rainbow": {
        **_Q,
        "v_min": _Param("float", -1e6, 1e6),
        "v_max": _Param("float", -1e6, 1e6),
        "num_atoms": _Param("int", 2, 201),
    },
    "ddpg": {
        **_COMMON,
        **_REPLAY,
        "actor_lr": _LR,
        "critic_lr": _LR,
        "max_grad_norm_actor": _GRAD,
        "max_grad_norm_critic": _GRAD,
        "noise_sigma": _Param("float", 0.0, 100.0),
        "noise_scale": _Param("float", 0.0, 100.0),
    },
    "ppo": {
        **_COMMON,
        "actor_lr": _LR,
        "critic_lr": _LR,
        "using_gae": _Param("bool"),
        "gae_lambda": _UNIT,
        "ppo_ratio_clip": _Param("float", 0.0, 10.0),
        "using_kl_div": _Param("bool"),
        "kl_beta": _Param("float", 0.0, 100.0),
        "target_kl": _Param("float", 0.0, 100.0),
        "num_epochs": _Param("int", 1, 100),
        "rollout_length": _Param("int", 1, 100_000),
        "actor_number_updates": _Param("int", 1, 100),
        "critic_number_updates": _Param("int", 1, 100),
        "entropy_loss_weight": _Param("float", 0.0, 100.0),
        "max_grad_norm_actor": _GRAD,
        "max_grad_norm_critic": _GRAD,
    },
}


def validate_config(model: str, config: Any) -> dict[str, Any]:
    """The checked config of a new agent: ``obs_size``, ``action_size`` and known hyperparameters.

    Raises :class:`ConfigError` (a 422) naming the first bad or unknown key.
    """
    if not isinstance(config, Mapping):
        raise ConfigError("config must be an object with obs_size and action_size")
    allowed = HYPERPARAMETERS[model]
    out: dict[str, Any] = {}
    for key, limit in (("obs_size", MAX_OBS_SIZE), ("action_size", MAX_ACTION_SIZE)):
        value = config.get(key)
        if type(value) is not int or not 1 <= value <= limit:
            raise ConfigError(f"config.{key} must be an integer between 1 and {limit}")
        out[key] = value
    if model in ("dqn", "rainbow") and out["action_size"] < 2:
        raise ConfigError("config.action_size of a discrete agent must be at least 2")
    out.update(_observation_layout(config, out["obs_size"]))
    for key, value in config.items():
        if key in out:
            continue
        param = allowed.get(key)
        if param is None:
            raise ConfigError(f"config.{key} is not a hyperparameter of {model} (known: {', '.join(sorted(allowed))})")
        out[key] = param.check(key, value)
    _check_model_rules(model, out)
    _check_cost(model, out)
    return out


def _observation_layout(config: Mapping[str, Any], obs_size: int) -> dict[str, Any]:
    """The optional ``obs_shape`` (whose product is ``obs_size``) and ``obs_dtype`` of a config (issue 12).

    They describe what a client sends (e.g. an 84x84x4 uint8 frame); the learners see a flat
    float32 vector of ``obs_size`` either way.
    """
    out: dict[str, Any] = {}
    if "obs_shape" in config:
        shape = config["obs_shape"]
        if (type(shape) is not list or not 1 <= len(shape) <= 8
                or any(type(n) is not int or n < 1 for n in shape)):
            raise ConfigError("config.obs_shape must be a list of 1 to 8 integers >= 1, e.g. [84, 84, 4]")
        if math.prod(shape) != obs_size:
            raise ConfigError(f"config.obs_shape {shape} holds {math.prod(shape):,} numbers; "
                              f"it must hold obs_size ({obs_size:,})")
        out["obs_shape"] = list(shape)
    if "obs_dtype" in config:
        dtype = config["obs_dtype"]
        if dtype not in OBS_DTYPES:
            raise ConfigError(f"config.obs_dtype {dtype!r:.40} is not one of {', '.join(OBS_DTYPES)}")
        out["obs_dtype"] = dtype
    return out


def step_bytes(model: str, config: Mapping[str, Any]) -> int:
    """About how many bytes of the server's memory one step takes in the agent's replay buffer
    (its rollout for PPO): float32 observations plus the library's objects around them."""
    obs_arrays = 1 if model == "ppo" else 2
    return 4 * obs_arrays * config["obs_size"] + 8 * config["action_size"] + _STEP_OVERHEAD_BYTES[model]


def _check_model_rules(model: str, config: Mapping[str, Any]) -> None:
    """Refuse hyperparameters that are each in range but do not go together."""
    if model == "ppo":
        rollout = config.get("rollout_length", 48)
        if config.get("batch_size", rollout) > rollout:
            raise ConfigError("config.batch_size of ppo cannot exceed rollout_length")
        if min(config.get("batch_size", rollout), rollout) < 2:
            # The policy's spread is estimated from the batch: from one sample it is NaN, and the
            # agent would fail on every step it is fed.
            raise ConfigError("config.batch_size and rollout_length of ppo must be at least 2")
    if model == "rainbow" and config.get("v_min", -10.0) >= config.get("v_max", 10.0):
        raise ConfigError("config.v_min must be below v_max")


def _check_cost(model: str, config: Mapping[str, Any]) -> None:
    """Refuse configs whose network, learning step or replay buffer would take over the server."""
    params = _network_parameters(model, config)
    if params > MAX_NETWORK_PARAMETERS:
        raise ConfigError(f"the network would have ~{params:,} weights, over the limit of {MAX_NETWORK_PARAMETERS:,}; "
                          "use fewer or narrower hidden_layers (or fewer num_atoms)")
    samples, updates, what = _samples_and_updates(model, config)
    cost = params * samples * updates
    if cost > MAX_UPDATE_COST:
        raise ConfigError(f"one learning step would cost ~{cost:.2g} multiply-adds ({what}), over the limit of "
                          f"{MAX_UPDATE_COST:.2g}; learn from fewer samples, with fewer updates or a smaller network")
    per_step = step_bytes(model, config)
    if model == "ppo":
        steps, what, key = config.get("rollout_length", _DEFAULT_ROLLOUT), "PPO rollout", "rollout_length"
    else:
        steps, what, key = config.get("buffer_size", _DEFAULT_BUFFER[model]), "full replay buffer", "buffer_size"
    if steps * per_step > MAX_BUFFER_BYTES:
        raise ConfigError(f"a {what} of {steps:,} steps would take ~{steps * per_step:,} bytes of memory "
                          f"(~{per_step:,} bytes per step), over the limit of {MAX_BUFFER_BYTES:,} bytes; "
                          f"set {key} to at most {MAX_BUFFER_BYTES // per_step:,}")


def _network_parameters(model: str, config: Mapping[str, Any]) -> int:
    """About how many weights the agent's networks have (its layers' products, actor and critic)."""
    layers = [config["obs_size"], *config.get("hidden_layers", _DEFAULT_LAYERS[model])]
    outputs = config["action_size"] * (config.get("num_atoms", 21) if model == "rainbow" else 1)
    params = sum(a * b for a, b in zip(layers, layers[1:] + [outputs], strict=True))
    if model in ("ppo", "ddpg"):  # an actor and a critic of about the same size
        params *= 2
    return params


def _samples_and_updates(model: str, config: Mapping[str, Any]) -> tuple[int, int, str]:
    """Samples and updates of one learning step, and how the refusal names their product."""
    if model == "ppo":
        # ai-traineree's PPO learns from the whole rollout in minibatches, every epoch: the batch
        # size only slices it.
        samples = config.get("rollout_length", 48)
        updates = max(config.get("actor_number_updates", 10), config.get("critic_number_updates", 10))
        updates *= config.get("num_epochs", 1)
        return samples, updates, "weights x rollout_length x updates x num_epochs"
    samples = config.get("batch_size", _DEFAULT_BATCH[model])
    updates = config.get("number_updates", 1)
    return samples, updates, "weights x batch_size x number_updates"


def build_agent(model: str, config: Mapping[str, Any]):
    """A fresh ai-traineree agent for a config that :func:`validate_config` accepted."""
    from aitraineree.types import DataSpace

    obs_space = DataSpace(dtype="float", shape=(config["obs_size"],))
    hyper = {k: (tuple(v) if isinstance(v, list) else v)
             for k, v in config.items() if k not in ("obs_size", "action_size", "obs_shape", "obs_dtype")}
    hyper["device"] = "cpu"
    if is_discrete(model):
        action_space = DataSpace.from_int(config["action_size"])
    else:
        action_space = DataSpace(dtype="float", shape=(config["action_size"],), low=-1.0, high=1.0)
    if model == "dqn":
        from aitraineree.agents.dqn import DQNAgent as cls
    elif model == "rainbow":
        from aitraineree.agents.rainbow import RainbowAgent as cls
    elif model == "ddpg":
        from aitraineree.agents.ddpg import DDPGAgent as cls
    elif model == "ppo":
        cls = _ppo_class()
    else:
        raise ConfigError(f"unknown model {model!r}")
    return cls(obs_space, action_space, **hyper)


_PPO_CLASS = None
_PPO_MAX_RATIO = 1000.0


def _ppo_class():
    """ai-traineree's PPOAgent, stopping an actor update whose probability ratio overflowed.

    PPO's ratio is exp(new - old log probability) of the logged action. A server learns from
    actions its clients chose, which the policy may find all but impossible: where the policy's
    std is clamped to 0.001 a log probability is ~-5e5, and after one update the ratio overflows to
    inf. The clipped objective can still be finite, but its gradient is 0 x inf = NaN and the
    weights are NaN after the optimizer step (issue 14: ``ppo reported no loss``, a third of the
    runs of the learning test). PPO already stops a minibatch's actor updates when the KL estimate
    is too large; it does not catch this case, since that estimate is then hugely negative. Here a
    non-finite loss, or a mean ratio over 1000, reports an infinite KL, so PPO stops before the
    step that would poison the weights.
    """
    global _PPO_CLASS
    if _PPO_CLASS is None:
        from aitraineree.agents.ppo import PPOAgent

        class GuardedPPOAgent(PPOAgent):
            def compute_policy_loss(self, samples):
                loss, kl_div = super().compute_policy_loss(samples)
                ratio = float(self._metrics.get("policy/policy_ratio", 1.0))
                # "not <=" catches NaN too. A mean ratio of 1000 is far outside PPO's clip range
                # (1 +- 0.25); beyond it the gradients can overflow even while the loss is finite.
                if not (math.isfinite(float(loss.detach())) and ratio <= _PPO_MAX_RATIO):
                    kl_div = math.inf
                return loss, kl_div

        _PPO_CLASS = GuardedPPOAgent
    return _PPO_CLASS


def _network_state(agent) -> dict[str, dict[str, torch.Tensor]]:
    return {k: {n: t.detach().clone() for n, t in v.items()} for k, v in agent.get_network_state().net.items()}


def _all_finite(agent) -> bool:
    return all(bool(torch.isfinite(t).all()) for v in agent.get_network_state().net.values() for t in v.values())


def _finite_losses(agent) -> dict[str, float]:
    out = {}
    for key, value in dict(agent.loss).items():
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            out[str(key)] = value
    return out


def encode_network(net: Mapping[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(dict(net), buf)
    return buf.getvalue()


def decode_network(data: bytes) -> dict[str, dict[str, torch.Tensor]]:
    """Read a torch state dict without ever running a pickle from the outside world.

    Only torch's zip format is taken, and it is read with ``weights_only=True``, whose unpickler
    knows tensors and plain containers and refuses every other global (so a ``__reduce__`` payload
    never runs). A bare pickle is refused before torch even sees it.
    """
    if not data.startswith(_TORCH_ZIP_MAGIC):
        raise NetworkFormatError("encoded_network is not a torch.save() zip archive (pickles are refused)")
    try:
        net = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, zip and EOF errors...
        detail = f"encoded_network could not be read as a state dict: {exc}".splitlines()[0][:300]
        raise NetworkFormatError(detail) from None
    if not isinstance(net, dict) or not all(
        isinstance(k, str) and isinstance(v, dict) and all(isinstance(t, torch.Tensor) for t in v.values())
        for k, v in net.items()
    ):
        raise NetworkFormatError("encoded_network must be a dict of module state dicts")
    _check_tensors(net)
    return net


def _check_tensors(net: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
    """Refuse tensors that are not real, finite floating point weights or integer buffers."""
    for part, tensors in net.items():
        for key, tensor in tensors.items():
            # Only real floating point weights and integer buffers: a complex tensor is not
            # "floating point" to torch, so a finiteness check that skips other dtypes let complex
            # NaN weights through, and load_state_dict then copied their real part, NaN, into
            # the network (issue 9). Bool, quantized and other dtypes have no business here either.
            if tensor.is_complex() or not (tensor.is_floating_point() or tensor.dtype in _INTEGER_DTYPES):
                raise NetworkFormatError(f"encoded_network: {part}.{key} has dtype {tensor.dtype}; "
                                         "only real floating point weights (and integer buffers) are taken")
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                # Loaded, such weights answer act() with NaN and poison everything learned after.
                raise NetworkFormatError(f"encoded_network holds non-finite weights ({part}.{key})")


def _check_fits(
    net: Mapping[str, Mapping[str, torch.Tensor]], current: Mapping[str, Mapping[str, torch.Tensor]]
) -> None:
    """Refuse a state dict whose parts, keys or dtype kinds differ from the agent's own."""
    if set(net) != set(current):
        raise NetworkFormatError(f"encoded_network has parts {sorted(net)}; this agent has {sorted(current)}")
    for part, tensors in net.items():
        mine = current[part]
        if set(tensors) != set(mine):
            raise NetworkFormatError(f"encoded_network.{part} has other keys than this agent's network")
        for key, tensor in tensors.items():
            own = mine[key]
            # A float weight takes any real float (it is cast); an integer buffer only its own dtype.
            same_kind = tensor.is_floating_point() if own.is_floating_point() else tensor.dtype == own.dtype
            if not same_kind:
                raise NetworkFormatError(
                    f"encoded_network: {part}.{key} has dtype {tensor.dtype}, this agent's is {own.dtype}"
                )


class _Flag:
    """A hook that notes it was called (the policy optimizer stepped)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = False

    def __call__(self, *_args: Any) -> None:
        self.value = True


# -- one agent at run time -----------------------------------------------------------------------


class AgentRuntime:
    """An agent object, its lock, its learner thread and its weights file."""

    def __init__(
        self, row: AgentRow, store: Store, weights_dir: Path | None, *, learn: bool, save_interval: float
    ) -> None:
        self.id = row.id
        self.model = row.model
        self.config = row.config
        self.discrete = is_discrete(row.model)
        self._store = store
        # A shared (PostgreSQL) store keeps the weights itself; weights_dir is then None.
        self._weights_path = weights_dir / f"agent-{row.id}.pt" if weights_dir is not None else None
        self._shared = store.shared
        # Shared store only: the learner epoch this replica holds the agent with (None: it only
        # acts, from the latest saved weights), and the version of the weights it loaded last.
        self._epoch: int | None = None
        self._loaded_version = 0
        self._progress_at = 0.0
        self._learn = learn
        self._save_interval = save_interval
        self.lock = threading.Lock()
        self.agent = build_agent(row.model, row.config)
        self.cursor = 0  # log position of the next step to learn
        self.learn_errors = 0
        self._good_loss: dict[str, float] = {}  # the losses of the last weights known to be finite
        # The dashboard's learning curve and episode returns (curves.py): bounded, in memory.
        self.loss_curve = SampleRing()
        self.returns = EpisodeReturns()
        self._errors_logged_at = -math.inf
        self._errors_unlogged = 0
        self._deleted = False  # set by Learners.remove: nothing may be written for this agent any more
        self._saved_cursor = -1
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # The weights generation: bumped (under self.lock) whenever the policy's weights may have
        # changed: a learning step that stepped the policy's optimizer, a snapshot upload, a
        # divergence rollback. The policy version (a hash) is computed lazily, once per generation.
        self.weights_generation = 0
        self._policy_stepped = _Flag()  # set by the policy optimizer's step hook during agent.step
        self._watching = False  # whether that hook is in place (else every learning step bumps)
        self._version_lock = threading.Lock()  # guards the four fields below
        self._current_version: tuple[int, str] | None = None  # (generation, version) last computed
        self._version_generations: OrderedDict[str, int] = OrderedDict()  # version -> latest generation
        self._lags: deque[int | None] = deque(maxlen=POLICY_LAG_WINDOW)  # None: the version was unknown
        self._export: tuple[int, PolicyExport] | None = None  # the last export and its generation
        self._export_lock = threading.Lock()  # one export at a time per agent: the next one finds it cached
        self._load_weights()
        self._watch_policy()

    # weights

    def _load_weights(self) -> None:
        if self._weights_path is None:
            self._load_checkpoint()
            return
        if not self._weights_path.exists():
            return
        try:
            saved = torch.load(self._weights_path, map_location="cpu", weights_only=True)
            self._set_network(saved["network"])
            self.weights_generation += 1
            self.cursor = int(saved["cursor"])
            self._saved_cursor = self.cursor
        except Exception:
            # A damaged file must not keep the server (and every other agent) from starting:
            # the agent starts from fresh weights and relearns the whole log.
            logger.exception("agent %s: cannot load %s, starting from fresh weights", self.id, self._weights_path)
            self.cursor = 0

    def save(self) -> None:
        """Write weights and cursor atomically (temp file, fsync, rename); nothing once deleted.

        With a shared store, only the replica that learns the agent saves, into the database.
        """
        if self._deleted:
            return
        if self._weights_path is None and self._epoch is None:
            return  # a replica that only acts has nothing of its own to save
        with self.lock:
            payload = {"network": _network_state(self.agent), "cursor": self.cursor, "model": self.model}
        cursor = payload["cursor"]
        if self._weights_path is None:
            self._save_checkpoint(payload)
            return
        tmp = self._weights_path.with_suffix(".tmp")
        # 0600 whatever the umask: the weights are the owner's data (see security.secure_data_dir).
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._weights_path)
        self._saved_cursor = cursor
        if self._deleted:  # deleted while this save was being written
            self.delete_files()

    def delete_files(self) -> None:
        if self._weights_path is None:
            return  # a shared store deletes the checkpoint with the agent
        for path in (self._weights_path, self._weights_path.with_suffix(".tmp")):
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def _set_network(self, net: Mapping[str, Any]) -> None:
        from aitraineree.types import NetworkState

        self.agent.set_network(NetworkState(net=dict(net)))

    def network_bytes(self) -> bytes:
        with self._busy_lock():
            net = _network_state(self.agent)
        return encode_network(net)

    def load_network_bytes(self, data: bytes) -> None:
        """Replace the weights from :func:`decode_network` bytes; raises :class:`NetworkFormatError`."""
        net = decode_network(data)
        with self._busy_lock():
            backup = _network_state(self.agent)
            _check_fits(net, backup)
            try:
                self._set_network(net)
            except Exception as exc:  # noqa: BLE001 - load_state_dict raises RuntimeError, KeyError, ...
                self._set_network(backup)
                detail = f"encoded_network does not fit this agent: {exc}".splitlines()[0][:300]
                raise NetworkFormatError(detail) from None
            finally:
                self.weights_generation += 1
        self._saved_cursor = -1  # force the next save
        if self._shared:
            self._publish_upload()

    # weights in a shared store (PostgreSQL): one replica learns, the others follow its saves

    def _load_checkpoint(self) -> None:
        """Take the weights and cursor last saved in the shared store (nothing when none was)."""
        try:
            checkpoint = self._store.load_checkpoint(self.id)
            if checkpoint is None or checkpoint.version <= self._loaded_version:
                return
            saved = torch.load(io.BytesIO(checkpoint.payload), map_location="cpu", weights_only=True)
            with self.lock:
                self._set_network(saved["network"])
                self.weights_generation += 1
            self.cursor = int(saved["cursor"])
            self._saved_cursor = self.cursor
            self._loaded_version = checkpoint.version
        except Exception:
            # As with a damaged file: the agent keeps the weights it has (fresh ones at worst).
            logger.exception("agent %s: cannot load its saved weights from the store", self.id)

    def _save_checkpoint(self, payload: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(payload, buf)
        version = self._store.save_checkpoint(self.id, self._epoch, payload["cursor"], buf.getvalue())
        if version is None:
            self._fenced()
            return
        self._loaded_version = version
        self._saved_cursor = payload["cursor"]

    def _fenced(self) -> None:
        # Another replica holds a newer epoch: this one lost its lock (its session dropped). It
        # must not learn nor save any more, or two learners would write the same agent.
        logger.warning("agent %s: another replica learns it now (epoch %s is over); stopped learning",
                       self.id, self._epoch)
        self._epoch = None
        self._stop.set()

    def lead(self, epoch: int) -> None:
        """Start learning the agent as holder of ``epoch`` (its learner lock is held), from the last save."""
        self._load_checkpoint()
        self._epoch = epoch
        if self._thread is not None and not self._thread.is_alive():
            self._thread = None  # a learner of an earlier epoch that was fenced off
        self._stop.clear()
        self.start()

    @property
    def leading(self) -> bool:
        return self._epoch is not None

    def hand_over(self, timeout: float = 10.0) -> int | None:
        """Stop learning and save (fenced), so that another replica can resume exactly here.

        Returns the epoch given up (None if this replica was not learning the agent); the runtime
        stays, to act from the saved weights.
        """
        epoch = self._epoch
        if epoch is None:
            return None
        self.stop(save=True, timeout=timeout)
        self._epoch = None
        return epoch

    def refresh(self, version: int) -> None:
        """Weights of ``version`` were saved: take them (a learner takes only the network of an upload)."""
        if version <= self._loaded_version:
            return
        if self._epoch is None:
            self._load_checkpoint()
            return
        # The learner saved every version up to _loaded_version itself: a newer one is a snapshot
        # uploaded through another replica. Learn on from those weights, at this learner's cursor.
        checkpoint = self._store.load_checkpoint(self.id)
        if checkpoint is None or checkpoint.version <= self._loaded_version:
            return
        try:
            saved = torch.load(io.BytesIO(checkpoint.payload), map_location="cpu", weights_only=True)
            with self.lock:
                self._set_network(saved["network"])
                self.weights_generation += 1
        except Exception:
            logger.exception("agent %s: cannot load the uploaded weights from the store", self.id)
            return
        self._loaded_version = checkpoint.version
        self._saved_cursor = -1

    def _publish_upload(self) -> None:
        """Share weights uploaded to this replica (POST /snapshots) with the others, the learner first."""
        if self._epoch is not None:
            self.save()
            return
        with self.lock:
            payload = {"network": _network_state(self.agent), "cursor": self.cursor, "model": self.model}
        buf = io.BytesIO()
        torch.save(payload, buf)
        version = self._store.save_checkpoint(self.id, None, payload["cursor"], buf.getvalue())
        if version is not None:
            self._loaded_version = version

    def _report_progress(self) -> None:
        """Record the learner's cursor in the shared store (about once a second), for the other replicas."""
        epoch = self._epoch
        if epoch is None or time.monotonic() - self._progress_at < 1.0:
            return
        self._progress_at = time.monotonic()
        if not self._store.report_progress(self.id, epoch, self.cursor):
            self._fenced()

    # the policy: its version, its export, how stale the acting policies were

    def _watch_policy(self) -> None:
        """Hook the policy optimizer's steps, so that a learning step that leaves the policy as it
        was (warm-up, a critic-only update, PPO between rollouts) keeps the generation."""
        optimizer = getattr(self.agent, _POLICY_OPTIMIZER.get(self.model, ""), None)
        register = getattr(optimizer, "register_step_post_hook", None)
        self._watching = register is not None
        if register is not None:
            # A flag, not a bound method: the agent must hold no reference back to this runtime
            # (a cycle would outlive a deleted agent, since Learners.get freezes the GC's objects).
            register(self._policy_stepped)

    def _remember_version(self, generation: int, version: str) -> None:
        with self._version_lock:
            if self._current_version is None or generation >= self._current_version[0]:
                self._current_version = (generation, version)
            known = self._version_generations
            if generation >= known.get(version, -1):
                known[version] = generation
                known.move_to_end(version)
            while len(known) > POLICY_VERSIONS_KEPT:
                known.popitem(last=False)

    def _copy_policy(self, *, with_exploration: bool = False,
                     timeout: float = ACT_LOCK_TIMEOUT) -> tuple[int, Any, dict[str, Any] | None, float, float]:
        """``(generation, policy module copy, exploration, lock wait, copy time)``; the lock only
        for the copy (raises AgentBusy when a learning step holds it longer than ``timeout``)."""
        started = time.perf_counter()
        with self._busy_lock(timeout):
            locked = time.perf_counter()
            generation = self.weights_generation
            module = policy_module(self.agent, self.model)
            exploration = exploration_of(self.agent, self.model) if with_exploration else None
            copied = time.perf_counter()
        return generation, module, exploration, locked - started, copied - locked

    def current_policy_version(self, timeout: float = ACT_LOCK_TIMEOUT) -> str:
        """The :func:`policy_export.policy_version` of the current weights, hashed once per generation.

        Raises AgentBusy (a learning step held the lock over ``timeout``) and
        policy_export.PolicyExportError (a model it cannot export).
        """
        with self._version_lock:
            cached = self._current_version
        if cached is not None and cached[0] == self.weights_generation:
            return cached[1]
        generation, module, _, _, _ = self._copy_policy(timeout=timeout)
        version = policy_version(module)  # on the copy, outside the agent's lock
        self._remember_version(generation, version)
        return version

    def policy_export(self) -> PolicyExport:
        """The current policy as ONNX: exported once per version, from a copy, outside the agent's lock.

        Raises AgentBusy and policy_export.PolicyExportError.
        """
        with self._export_lock:
            cached = self._export
            if cached is not None and cached[0] == self.weights_generation:
                return cached[1]
            generation, module, exploration, waited, copied = self._copy_policy(with_exploration=True)
            version = policy_version(module)
            self._remember_version(generation, version)
            if cached is not None and cached[1].version == version:
                export = cached[1]  # the weights moved and came back (or only the generation moved)
            else:
                assert exploration is not None
                export = export_module(module, self.model, self.config["obs_size"], self.config["action_size"],
                                       exploration, version=version, lock_wait_seconds=waited, copy_seconds=copied)
            self._export = (generation, export)
            return export

    def _record_lag(self, version: str) -> None:
        """Note how many policy updates behind the current one the policy that chose a step was."""
        with self._version_lock:
            generation = self._version_generations.get(version)
            self._lags.append(None if generation is None else max(self.weights_generation - generation, 0))

    def policy_lag(self) -> dict[str, Any]:
        """Percentiles of the lag of the latest POLICY_LAG_WINDOW learnt steps that carried a version.

        ``count`` is how many of them had a version this server knows (had computed), ``unknown``
        how many did not (another server's, one from before a restart, or one forgotten since:
        only the latest POLICY_VERSIONS_KEPT are remembered). p50, p90 and max are null without data.
        """
        with self._version_lock:
            lags = list(self._lags)
        known = sorted(lag for lag in lags if lag is not None)
        out: dict[str, Any] = {"p50": None, "p90": None, "max": None, "count": len(known),
                               "unknown": len(lags) - len(known), "window": POLICY_LAG_WINDOW}
        if known:
            # Nearest rank: the smallest lag with at least p% of the lags at or below it.
            out["p50"] = known[max(math.ceil(0.5 * len(known)) - 1, 0)]
            out["p90"] = known[max(math.ceil(0.9 * len(known)) - 1, 0)]
            out["max"] = known[-1]
        return out

    # acting

    def act(self, obs: list[float], noise: float) -> list:
        from aitraineree.types.experience import Experience

        try:
            with self._busy_lock():
                # float32: a JSON integer can be up to 2**64, which torch cannot turn into a tensor.
                exp = self.agent.act(Experience(obs=to_float32(obs)), noise)
            action = exp.action
            if self.discrete:
                return [int(action)]
            values = action.tolist() if hasattr(action, "tolist") else list(action)
            if values and isinstance(values[0], list):  # a batch of one
                values = values[0]
            out = [float(v) for v in values]
        except AgentBusy:
            raise
        except Exception as exc:  # the library asserts; report it as the agent failing
            raise AgentFailure(f"the {self.model} agent could not act: {type(exc).__name__} {exc}".strip()) from exc
        if not all(math.isfinite(v) for v in out):
            raise AgentFailure(f"the {self.model} agent produced a non-finite action")
        return out

    @contextmanager
    def _busy_lock(self, timeout: float = ACT_LOCK_TIMEOUT) -> Iterator[None]:
        """The agent's lock for a request: the learner holds it through one learning step, which
        configs keep short; a request waits that long at most, then gets AgentBusy (a 503)."""
        if not self.lock.acquire(timeout=timeout):
            raise AgentBusy(f"the {self.model} agent is busy learning; try again")
        try:
            yield
        finally:
            self.lock.release()

    def loss(self) -> dict[str, float]:
        """The agent's latest losses; names whose value is not known yet (NaN) are left out."""
        with self._busy_lock():
            out = _finite_losses(self.agent)
        # After a divergence the agent is a fresh one that has not learned yet: the losses of the
        # weights it was restored to are the latest that are known.
        return out or dict(self._good_loss)

    # learning

    def _experience(self, step: Mapping[str, Any]):
        from aitraineree.types.experience import Experience

        action = step["action"]
        if isinstance(action, np.ndarray):  # a step of the binary encoding
            action = action.reshape(-1).tolist()
        # Observations as flat float32 arrays, built at C speed from the logged list or bytes: a
        # camera frame is 28,224 numbers, too many for a Python float each (issue 12).
        exp = Experience(
            obs=to_float32(step["obs"]),
            action=int(action[0]) if self.discrete else [float(a) for a in action],
            reward=float(step["reward"]),
            next_obs=to_float32(step["next_obs"]),
            done=bool(step["done"]),
        )
        if self.model == "ppo":
            # PPO learns from the log probability and value estimate of the action taken; the log
            # only has the action, so compute them with the current policy (as acting would have).
            agent = self.agent
            with torch.no_grad():
                t_obs = torch.tensor(exp.obs, dtype=torch.float32).unsqueeze(0)
                agent.policy(agent.actor.act(t_obs))
                logprob = agent.policy.log_prob(torch.tensor([exp.action], dtype=torch.float32))
                value = agent.critic.act(t_obs)
            exp.update(logprob=logprob.reshape(1), value=value.reshape(1, 1))
        return exp

    def learn_available(self, max_steps: int = LEARN_CHUNK) -> int:
        """Feed up to ``max_steps`` new logged steps to the agent; returns how many were read.

        When a chunk leaves non-finite weights (a diverged update), they are put back as they
        were before it: an agent that answers ``act`` with NaN, or fails on it, helps no one.
        """
        entries = self._store.read_entries(self.id, self.cursor, max_steps, arrays=True)
        if not entries:
            return 0
        with self.lock:
            good = self._checkpoint()
        for entry in entries:
            if self._stop.is_set():
                break
            step = entry.step
            if entry.policy_version is not None:
                self._record_lag(entry.policy_version)
            failed = not self._learn_step(step)
            self.returns.add(time.time(), entry.producer_id, float(step["reward"]), bool(step["done"]))
            self.cursor += 1
            if failed or self._trained_rollout():
                # A step that fails, or a PPO update (a whole rollout's worth of learning in one
                # step), is where weights diverge: check at once rather than at the end of the
                # chunk, so that the steps after it are learned by a healthy agent instead of each
                # failing on NaN weights (PPO with off-policy actions: the probability ratio
                # exp(new - old log prob) overflows, the loss is inf, the weights NaN).
                with self.lock:
                    if _all_finite(self.agent):
                        good = self._checkpoint()
                    else:
                        self._restore(good)
        with self.lock:
            if not _all_finite(self.agent):
                self._restore(good)
        return len(entries)

    def _learn_step(self, step: Mapping[str, Any]) -> bool:
        """Feed one logged step to the agent; whether it learned from it (a failure is counted and logged)."""
        try:
            with self.lock:
                self._policy_stepped.value = False
                try:
                    self.agent.step(self._experience(step))
                finally:
                    if self._policy_stepped.value or not self._watching:
                        self.weights_generation += 1
        except Exception:
            # One step the agent chokes on must not stop learning from the rest (nor kill the thread).
            self._learn_error("learning from log position %s failed", self.cursor)
            return False
        return True

    def _checkpoint(self) -> dict[str, dict[str, torch.Tensor]]:
        """The current weights (the caller holds the lock), and their losses kept for :meth:`loss`."""
        losses = _finite_losses(self.agent)
        if losses:
            self._good_loss = losses
            # Read here anyway, once per chunk: the learning curve costs one clock read more.
            self.loss_curve.offer(time.time(), losses)
        return _network_state(self.agent)

    def _trained_rollout(self) -> bool:
        agent = self.agent
        return self.model == "ppo" and agent.iteration > 0 and agent.iteration % agent.rollout_length == 0

    def _restore(self, good: Mapping[str, Any]) -> None:
        # Putting the weights back is not enough: the optimizer's moments and the replay buffer's
        # priorities are NaN too, and every later update would fail (or stay NaN). A fresh agent
        # with the last good weights learns on from the next steps. The caller holds the lock.
        self._learn_error("weights diverged (NaN/inf) before log position %s; restored the last good "
                          "weights in a fresh agent (its replay buffer starts empty)", self.cursor)
        self.agent = build_agent(self.model, self.config)
        self._set_network(good)
        self.weights_generation += 1
        self._watch_policy()

    def _learn_error(self, message: str, *args: Any) -> None:
        """Count a learning failure; log it with its traceback, but at most once a minute per agent."""
        self.learn_errors += 1
        now = time.monotonic()
        if now - self._errors_logged_at < LEARN_ERROR_LOG_INTERVAL:
            self._errors_unlogged += 1
            return
        since = f" ({self._errors_unlogged} more since the last report)" if self._errors_unlogged else ""
        logger.warning("agent %s: " + message + "%s; %d learning errors in all", self.id, *args, since,
                       self.learn_errors, exc_info=True)
        self._errors_logged_at = now
        self._errors_unlogged = 0

    def notify(self) -> None:
        self._wake.set()

    def start(self) -> None:
        # With a shared store, a replica learns an agent only once it holds it (lead()).
        if self._thread is None and self._learn and (not self._shared or self._epoch is not None):
            self._thread = threading.Thread(target=self._run, name=f"learner-{self.id}", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        last_save = time.monotonic()
        while not self._stop.is_set():
            try:
                read = self.learn_available()
                if self._stop.is_set():
                    break  # stop() saves when it should; a deleted agent must not be written again
                if self._shared:
                    self._report_progress()
                if time.monotonic() - last_save >= self._save_interval and self.cursor != self._saved_cursor:
                    self.save()
                    last_save = time.monotonic()
                if read == 0:
                    self._wake.wait(1.0)
                    self._wake.clear()
                else:
                    # Let request threads at the GIL between chunks.
                    time.sleep(0.001)
            except Exception:
                logger.exception("agent %s: learner error; retrying in 1 s", self.id)
                self._stop.wait(1.0)

    def stop(self, *, save: bool = True, timeout: float = 10.0) -> None:
        """Stop the learner thread (within ``timeout``) and, when asked, save weights and cursor."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("agent %s: learner did not stop within %.0f s", self.id, timeout)
        if save:
            try:
                self.save()
            except Exception:
                logger.exception("agent %s: saving weights failed", self.id)


class Learners:
    """Every agent's :class:`AgentRuntime`, keyed by agent id; built lazily on first use."""

    def __init__(
        self, store: Store, data_dir: Path | None, *, learn: bool = True, save_interval: float = DEFAULT_SAVE_INTERVAL,
        replica_id: str = "",
    ) -> None:
        self._store = store
        # A shared store keeps weights itself (and a replica may have no data directory at all).
        self._dir: Path | None = None
        if not store.shared:
            assert data_dir is not None, "the SQLite store keeps weights in the data directory"
            self._dir = Path(data_dir) / "weights"
            self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        #: This server process, as GET /agents/{name} names the one that learns an agent.
        self.replica_id = replica_id or f"{socket.gethostname()}-{os.getpid()}"
        self.learn = learn
        self._learn = learn
        self._save_interval = save_interval
        self._runtimes: dict[int, AgentRuntime] = {}
        self._building: dict[int, threading.Lock] = {}  # agents being built, each under its own lock
        self._removed: set[int] = set()  # ids are never reused (AUTOINCREMENT), so this only grows by deletes
        self._lock = threading.Lock()
        self._closed = False

    def start_all(self) -> None:
        for row in self._store.list_agents():
            if self._closed:  # shut down while agents were still loading
                return
            try:
                self.get(row)
            except Exception:
                logger.exception("agent %s (%s/%s) could not be loaded", row.id, row.owner, row.name)

    def get(self, row: AgentRow) -> AgentRuntime:
        """The agent's runtime, built on first use. Raises RuntimeError when shutting down and
        LookupError when the agent was removed while it was being built.

        Building (torch, weights from disk) can take seconds; it happens under a lock of that agent
        only, so that other agents' calls (and the startup loader) never wait for it.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("server is shutting down")
            runtime = self._runtimes.get(row.id)
            if runtime is not None:
                return runtime
            building = self._building.setdefault(row.id, threading.Lock())
        with building:
            with self._lock:
                runtime = self._runtimes.get(row.id)
                if runtime is not None:
                    return runtime
            runtime = AgentRuntime(row, self._store, self._dir, learn=self._learn, save_interval=self._save_interval)
            with self._lock:
                self._building.pop(row.id, None)
                gone = self._closed or row.id in self._removed
                if not gone:
                    self._runtimes[row.id] = runtime
            if gone:
                self._discard(runtime, row.id)
            gc.freeze()  # the agent's modules and network are long-lived: see runner.py
            runtime.start()
            return runtime

    def _discard(self, runtime: AgentRuntime, agent_id: int) -> NoReturn:
        """Drop a runtime built for an agent that was removed, or for a server that closed, meanwhile."""
        runtime._deleted = agent_id in self._removed
        if runtime._deleted:
            runtime.delete_files()
        if self._closed:
            raise RuntimeError("server is shutting down")
        raise AgentDeleted(f"agent {agent_id} was deleted")

    def peek(self, agent_id: int) -> AgentRuntime | None:
        return self._runtimes.get(agent_id)

    def ids(self) -> list[int]:
        """The agents whose runtime is built here."""
        with self._lock:
            return list(self._runtimes)

    def progress(self, agent_id: int) -> dict[str, Any]:
        """``steps_learned``, ``learn_errors`` and ``learner`` (the replica learning it, or None) of an agent.

        With a shared store, a replica that does not learn the agent reports what its learner last
        recorded (at most about a second old).
        """
        runtime = self._runtimes.get(agent_id)
        errors = runtime.learn_errors if runtime is not None else 0
        if not self._store.shared:
            learning = runtime is not None and runtime._thread is not None
            return {"steps_learned": runtime.cursor if runtime is not None else 0, "learn_errors": errors,
                    "learner": self.replica_id if learning else None}
        if runtime is not None and runtime.leading:
            return {"steps_learned": runtime.cursor, "learn_errors": errors, "learner": self.replica_id}
        replica, learned = self._store.learner_info(agent_id)
        return {"steps_learned": learned, "learn_errors": errors, "learner": replica}

    def remove(self, agent_id: int) -> None:
        """Stop the agent's learner and delete its weights; a build in progress is discarded when it ends."""
        with self._lock:
            runtime = self._runtimes.pop(agent_id, None)
            self._removed.add(agent_id)
        if runtime is not None:
            runtime._deleted = True  # a save in flight or after a slow stop deletes its own file
            runtime.stop(save=False)
            runtime.delete_files()
        elif self._dir is not None:
            (self._dir / f"agent-{agent_id}.pt").unlink(missing_ok=True)

    def close(self, timeout: float = 20.0) -> None:
        """Stop every learner and save every agent's weights; idempotent."""
        with self._lock:
            self._closed = True
            runtimes = list(self._runtimes.values())
            self._runtimes.clear()
        for runtime in runtimes:
            runtime._stop.set()
            runtime._wake.set()
        per = timeout / max(len(runtimes), 1)
        for runtime in runtimes:
            runtime.stop(save=True, timeout=per)

