"""An agent's greedy policy as a self-describing ONNX model, for acting on the robot (issue 11).

The graph takes ``obs`` (float32 ``[N, obs_size]``, any N) and answers ``action``, the greedy
action of each observation, with every bit of post-processing inside the graph:

========  ==========================================================================  =====================
model     ``action``                                                                  dtype, shape
========  ==========================================================================  =====================
dqn       argmax over actions of the dueling net's Q                                  int64 ``[N]``
rainbow   argmax over actions of the value distribution's mean, sum(p(z) * z)         int64 ``[N]``
ddpg      the actor's output (tanh), clamped to the action bounds                     float32 ``[N, A]``
ppo       the mean of the actor's Gaussian, clamped to the action bounds              float32 ``[N, A]``
========  ==========================================================================  =====================

PPO has a second output, ``action_std`` (float32 ``[N, A]``): the standard deviation of the
Gaussian that the agent's ``act`` samples from, which depends on the observation.

The model's ``metadata_props`` make the file self-describing (``agents_bar.*``: format, model,
obs_size, action_size, discrete, action_low/action_high, policy_version, and ``exploration``, a
JSON object that says how a client adds noise the way the server's ``act(obs, noise)`` does; see
:func:`exploration_of`). ``agents_bar_stream.policy.LocalPolicy`` reads all of it.

Exporting never touches the live agent: the policy's modules are deep-copied (under the agent's
lock, if one is given: a copy of a few MB takes about a millisecond), and the slow part, the
TorchScript trace and ONNX serialisation, runs on the copies with the lock released.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import threading
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ContextManager

import torch
from torch import nn

from agents_bar_stream.protocol import is_discrete

__all__ = [
    "EXPORT_FORMAT",
    "INPUT_NAME",
    "METADATA_PREFIX",
    "OPSET",
    "OUTPUT_NAME",
    "PPO_STD_OUTPUT_NAME",
    "PolicyExport",
    "PolicyExportError",
    "exploration_of",
    "export_module",
    "export_policy",
    "policy_module",
    "policy_version",
]

#: Version of the layout described in the module docstring (names, dtypes, metadata keys).
EXPORT_FORMAT = "1"
INPUT_NAME = "obs"
OUTPUT_NAME = "action"
PPO_STD_OUTPUT_NAME = "action_std"
METADATA_PREFIX = "agents_bar."
# Opset 17 is what onnxruntime >= 1.17 (the `local` extra's floor) runs in full, and the
# TorchScript exporter of torch 2.x writes it without onnxscript.
OPSET = 17
_VERSION_DIGEST_BYTES = 12
_EXPORT_LOCK = threading.Lock()

# torch >= 2.9 deprecates the TorchScript exporter on every call; it is the one that works without
# onnxscript (see export_policy), so the warnings say nothing the server can act on. Filters set
# once here rather than in warnings.catch_warnings(), which is not thread-safe.
warnings.filterwarnings(
    "ignore", category=DeprecationWarning, message=r"You are using the legacy TorchScript-based ONNX export"
)
warnings.filterwarnings(
    "ignore",
    category=DeprecationWarning,
    message=r"The feature will be removed\. Please remove usage of this function",
    module=r"torch\.onnx\..*",
)


class PolicyExportError(RuntimeError):
    """The agent's policy could not be exported (an unknown model, an unexpected network)."""


@dataclass(frozen=True)
class PolicyExport:
    """One exported policy: the ONNX bytes and what they were made of."""

    model: str
    obs_size: int
    action_size: int
    #: :func:`policy_version` of the exported weights; the ``ETag`` of ``GET /agents/{name}/policy``.
    version: str
    #: How a client explores like the server's ``act(noise)``; also in the model's metadata.
    exploration: dict[str, Any]
    #: The serialised ``onnx.ModelProto``.
    onnx_bytes: bytes
    #: Seconds spent waiting for ``lock`` (a learner in a long update; 0 without a lock).
    lock_wait_seconds: float
    #: Seconds the copy of the networks took: how long the agent's lock was held.
    copy_seconds: float
    #: Seconds the whole export took, waiting for the lock included.
    export_seconds: float

    @property
    def metadata(self) -> dict[str, str]:
        """The ``metadata_props`` written into the model, keys with their ``agents_bar.`` prefix."""
        return _metadata(self.model, self.obs_size, self.action_size, self.version, self.exploration)


# -- the graphs ----------------------------------------------------------------------------------


class _DQNPolicy(nn.Module):
    """argmax_a Q(obs, a): DQNAgent.act without its epsilon branch."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # DuelingNet.act is forward() under no_grad/eval; the arithmetic is the same.
        return torch.argmax(self.net(obs), dim=-1)


class _RainbowPolicy(nn.Module):
    """argmax_a E[Z(obs, a)] with the agent's atoms: RainbowAgent.act without its epsilon branch."""

    def __init__(self, net: nn.Module, z_atoms: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("z_atoms", z_atoms.detach().clone().float())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        probs = self.net(obs)  # softmax over atoms, [N, actions, atoms]
        return torch.argmax((probs * self.z_atoms).sum(-1), dim=-1)


class _DDPGPolicy(nn.Module):
    """clamp(actor(obs)): DDPGAgent.act with noise 0."""

    def __init__(self, actor: nn.Module, low: float, high: float) -> None:
        super().__init__()
        self.actor = actor
        self.low, self.high = low, high

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.actor(obs), self.low, self.high)


class _PPOPolicy(nn.Module):
    """The mean (clamped) and standard deviation of the Gaussian PPOAgent.act samples from.

    ai-traineree's MultivariateGaussianPolicy reads the actor's ``2 * A`` outputs as ``[mean | s]``
    (``view(-1, 2, A)``) with ``s`` clamped to [std_min, std_max]. For A == 1 it samples
    ``Normal(mean, scale=s)``; for A > 1 ``MultivariateNormal(mean, diag(s))``, whose second argument
    is a *covariance*, so each dimension's standard deviation is ``sqrt(s)``. ``action_std`` is the
    standard deviation actually used, so that a client samples from the same distribution.
    (``policy.act``, which reads ``view(-1, A, 2)``, is not what the agent's ``act`` uses.)
    """

    def __init__(self, actor: nn.Module, size: int, std_min: float, std_max: float, low: float, high: float) -> None:
        super().__init__()
        self.actor = actor
        self.size = size
        self.std_min, self.std_max = std_min, std_max
        self.low, self.high = low, high

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.actor(obs)
        mean = out[:, : self.size]
        spread = torch.clamp(out[:, self.size :], self.std_min, self.std_max)
        std = spread if self.size == 1 else torch.sqrt(spread)
        return torch.clamp(mean, self.low, self.high), std


def _bounds(agent: Any) -> tuple[float, float]:
    space = agent.action_space
    low, high = space.low, space.high
    if not (isinstance(low, (int, float)) and isinstance(high, (int, float))):
        raise PolicyExportError(
            f"only scalar action bounds are exported (the server's are -1, 1), not {low!r}, {high!r}"
        )
    return float(low), float(high)


def policy_module(agent: Any, model: str) -> nn.Module:
    """A CPU module computing the greedy policy from deep copies of the agent's networks.

    The caller holds the agent's lock around this call (if another thread may be learning): the
    copy is the only moment the live modules are read. The result shares nothing with the agent.
    """
    model = model.lower()
    if model == "dqn":
        module: nn.Module = _DQNPolicy(copy.deepcopy(agent.net))
    elif model == "rainbow":
        module = _RainbowPolicy(copy.deepcopy(agent.net), agent.z_atoms)
    elif model == "ddpg":
        module = _DDPGPolicy(copy.deepcopy(agent.actor), *_bounds(agent))
    elif model == "ppo":
        policy = agent.policy
        if type(policy).__name__ != "MultivariateGaussianPolicy" or getattr(agent, "num_workers", 1) != 1:
            raise PolicyExportError(
                "only PPO with MultivariateGaussianPolicy and one worker (the server's) is exported"
            )
        module = _PPOPolicy(copy.deepcopy(agent.actor), int(agent.action_size), float(policy.std_min),
                            float(policy.std_max), *_bounds(agent))
    else:
        raise PolicyExportError(f"no policy export for model {model!r}")
    module = module.to("cpu").eval()
    for param in module.parameters():
        param.requires_grad_(False)
        param.grad = None  # deepcopy copies the live gradients too; they are not part of a policy
    return module


# -- exploration ---------------------------------------------------------------------------------


def exploration_of(agent: Any, model: str) -> dict[str, Any]:
    """How a client adds noise like the server's ``act(obs, noise)``; JSON-ready.

    ``kind`` is one of:

    - ``"epsilon_greedy"`` (dqn, rainbow): with probability ``noise`` (Python's
      ``random() < noise``) the action is uniform over ``0 .. actions - 1`` (``randint(low, high)``,
      both ends included) and the network is not run; otherwise the greedy action.
    - ``"gaussian"`` (ddpg): ``clip(greedy + noise * scale * Normal(mean, std), low, high)``, one
      independent draw per action dimension. ai-traineree's GaussianNoise takes ``noise_sigma`` as a
      variance: ``std = sqrt(noise_sigma)``; ``mean`` is its 1e-8.
    - ``"policy_gaussian"`` (ppo): the server's ``act`` ignores ``noise`` and always samples
      ``Normal(mean, action_std)`` (the graph's two outputs), unclipped. Locally ``noise`` scales the
      standard deviation: ``0`` is the mean (greedy), ``1`` is the server's distribution; the sample is
      clipped to the action bounds (``clip``), which the server does not do (``server_clips``).
    """
    model = model.lower()
    if model in ("dqn", "rainbow"):
        return {"kind": "epsilon_greedy", "actions": int(agent.action_space.shape[0]),
                "rule": "with probability noise a uniform random action in [0, actions), else the greedy action"}
    low, high = _bounds(agent)
    if model == "ddpg":
        gaussian = agent.noise
        mean, std = gaussian.mu.flatten(), gaussian.std.flatten()
        if not (bool((mean == mean[0]).all()) and bool((std == std[0]).all())):
            raise PolicyExportError("DDPG noise with per-dimension parameters is not exported")
        return {
            "kind": "gaussian",
            "scale": float(gaussian.scale),
            "mean": float(mean[0]),
            "std": float(std[0]),
            "clip": [low, high],
            "rule": "clip(action + noise * scale * Normal(mean, std), low, high) per dimension",
        }
    if model == "ppo":
        return {
            "kind": "policy_gaussian",
            "std_output": PPO_STD_OUTPUT_NAME,
            "clip": [low, high],
            "server_ignores_noise": True,
            "server_clips": False,
            "rule": "noise 0: the mean; else clip(action + noise * action_std * Normal(0, 1), low, high) per dimension",
        }
    raise PolicyExportError(f"no policy export for model {model!r}")


# -- the version ---------------------------------------------------------------------------------


def policy_version(module_or_agent: Any, model: str | None = None) -> str:
    """A short hash of the policy's weights: equal weights, equal version; any change, a new one.

    Takes a :func:`policy_module` (or an agent and its model, for which the policy module is built
    first: the caller then holds the agent's lock). Only what the greedy policy reads counts, so
    learning that changes a critic or a target network alone keeps the version. Names, dtypes and
    shapes are hashed along with the raw bytes, so a reshaped network is a different policy.
    """
    module = module_or_agent if model is None else policy_module(module_or_agent, model)
    digest = hashlib.blake2b(digest_size=_VERSION_DIGEST_BYTES, person=b"agents-bar-pol")
    digest.update(type(module).__name__.encode())
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    # The constants baked into the graph (bounds, std limits) are part of the policy too.
    for attr in ("low", "high", "size", "std_min", "std_max"):
        if hasattr(module, attr):
            digest.update(f"{attr}={getattr(module, attr)!r}|".encode())
    return digest.hexdigest()


# -- export --------------------------------------------------------------------------------------


def _metadata(model: str, obs_size: int, action_size: int, version: str, exploration: dict[str, Any]) -> dict[str, str]:
    meta = {
        "format": EXPORT_FORMAT,
        "model": model,
        "obs_size": str(obs_size),
        "action_size": str(action_size),
        "discrete": "true" if is_discrete(model) else "false",
        "policy_version": version,
        "exploration": json.dumps(exploration, sort_keys=True, separators=(",", ":")),
    }
    if "clip" in exploration:
        meta["action_low"], meta["action_high"] = (repr(float(v)) for v in exploration["clip"])
    return {METADATA_PREFIX + k: v for k, v in meta.items()}


def export_policy(agent: Any, model: str, obs_size: int, action_size: int, *,
                  lock: ContextManager[Any] | None = None) -> PolicyExport:
    """The agent's greedy policy as ONNX bytes with self-describing metadata.

    ``lock`` (the agent's lock, e.g. ``AgentRuntime.lock``) is held only while the networks are
    copied; tracing and serialising run on the copies without it, so a learner is never held up
    by an export for more than the copy. Raises :class:`PolicyExportError` for a model or network
    this module does not know, and when the exported graph's outputs do not have the shape the
    format promises.
    """
    model = model.lower()
    started = time.perf_counter()
    with lock if lock is not None else nullcontext():
        locked = time.perf_counter()
        module = policy_module(agent, model)
        exploration = exploration_of(agent, model)
        copied = time.perf_counter()
    return export_module(module, model, obs_size, action_size, exploration, lock_wait_seconds=locked - started,
                         copy_seconds=copied - locked, started=started)


def export_module(module: nn.Module, model: str, obs_size: int, action_size: int, exploration: dict[str, Any], *,
                  version: str | None = None, lock_wait_seconds: float = 0.0, copy_seconds: float = 0.0,
                  started: float | None = None) -> PolicyExport:
    """Export a :func:`policy_module` (a copy that nothing else uses) with its :func:`exploration_of`.

    The slow half of :func:`export_policy`, for a caller that made the copy itself (the server
    keeps one export per version: it copies and hashes first, and exports only a new version).
    ``version`` is the module's :func:`policy_version` when the caller computed it already.
    """
    import onnx

    model = model.lower()
    if started is None:
        started = time.perf_counter()
    if version is None:
        version = policy_version(module)

    dummy = torch.zeros((2, obs_size), dtype=torch.float32)
    outputs = [OUTPUT_NAME, PPO_STD_OUTPUT_NAME] if model == "ppo" else [OUTPUT_NAME]
    buf = io.BytesIO()
    # One export at a time: the TorchScript exporter keeps its state (opset, "in export") in
    # torch.onnx's module globals, which two request threads exporting at once would mix up.
    with _EXPORT_LOCK, torch.no_grad():
        try:
            _check_traced_shapes(module, dummy, model, action_size)
            torch.onnx.export(
                module,
                (dummy,),
                buf,
                input_names=[INPUT_NAME],
                output_names=outputs,
                dynamic_axes={name: {0: "N"} for name in (INPUT_NAME, *outputs)},
                opset_version=OPSET,
                do_constant_folding=True,
                # The TorchScript exporter: the dynamo one needs onnxscript, which the server extra
                # does not carry, and these plain MLPs trace exactly.
                dynamo=False,
            )
        except PolicyExportError:
            raise
        except Exception as exc:  # noqa: BLE001 - the exporter raises many types; name the agent's model
            raise PolicyExportError(f"exporting the {model} policy failed: {type(exc).__name__}: {exc}") from exc
    proto = onnx.load_from_string(buf.getvalue())
    proto.producer_name = "agents-bar-stream"
    proto.doc_string = f"agents_bar_stream {model} greedy policy ({obs_size} -> {action_size}), version {version}"
    for key, value in _metadata(model, obs_size, action_size, version, exploration).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    data = proto.SerializeToString()
    done = time.perf_counter()
    return PolicyExport(model=model, obs_size=obs_size, action_size=action_size, version=version,
                        exploration=exploration, onnx_bytes=data, lock_wait_seconds=lock_wait_seconds,
                        copy_seconds=copy_seconds, export_seconds=done - started)


def _check_traced_shapes(module: nn.Module, dummy: torch.Tensor, model: str, action_size: int) -> None:
    """Refuse a network whose outputs are not the promised shape before tracing it (a config that
    does not match the agent would otherwise give a graph that fails on the robot)."""
    out = module(dummy)
    first = out[0] if isinstance(out, tuple) else out
    expected: tuple[int, ...] = (dummy.shape[0],) if is_discrete(model) else (dummy.shape[0], action_size)
    if tuple(first.shape) != expected:
        raise PolicyExportError(f"the {model} policy answers shape {tuple(first.shape)} for {tuple(dummy.shape)} "
                                f"observations; expected {expected} (does action_size match the agent?)")
    if isinstance(out, tuple) and tuple(out[1].shape) != expected:
        raise PolicyExportError(
            f"the {model} policy's {PPO_STD_OUTPUT_NAME} has shape {tuple(out[1].shape)}; expected {expected}"
        )
    # An argmax of NaN is still an integer: look at the weights themselves.
    if not all(bool(torch.isfinite(t).all()) for t in module.state_dict().values() if t.is_floating_point()):
        raise PolicyExportError(f"the {model} policy's weights are not finite (diverged?)")
