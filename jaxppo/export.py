"""Ship a trained policy: `jax.export` serialises it (parameters, observation normalisation, action masks, memory)
to StableHLO that needs only jax (and flatbuffers, which jax's deserialiser imports) to run, plus a JSON sidecar
that describes it.

    export_policy("runs/cartpole", "policy.jaxexport")     # writes policy.jaxexport and policy.jaxexport.json

    # anywhere, without jaxppo:
    exp = jax.export.deserialize(bytearray(open("policy.jaxexport", "rb").read()))
    actions = exp.call(obs)                                 # obs float32 [B, *obs_shape]

The exported function takes, in this order (the sidecar's "inputs" lists those it has):

    obs          float32 [B, *obs_shape]  the env adapter's observation (normalisation happens inside)
    action_mask  bool [B, A]              only for envs with action masks: True where an action is legal
    carry        tuple of float32 [B, H]  only with memory: the carry the previous call returned; to start, zeros
                                          shaped as the sidecar's memory.carry leaves
    first        bool [B]                 only with memory: True where obs starts an episode (carry reset there)
    key          uint32 [2]               only when exported stochastic: PRNG key data (jax.random.key_data)

and returns actions (int32 [B] discrete; float32 [B, *action_shape] continuous, clipped to the action space), or
(actions, carry) with memory. Greedy (the default) is the distribution's mode: bit for bit what the compiled
`jax.jit(jaxppo.load(run).act)(obs)` returns on the same platform and batch (the eager, op-by-op act may differ in the
last bit of a continuous action, where XLA fuses the observation normalisation; discrete actions match it too). B is
symbolic (any batch) unless exported with a fixed batch.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

FORMAT = "jaxppo-exported-policy/1"
"""The sidecar's "format": what a reader of these files checks first."""

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
"""Platforms jax.export lowers for (on any machine: no accelerator is needed to export for it)."""

DEFAULT_PLATFORMS = ("cpu", "cuda")

SIDECAR_SUFFIX = ".json"
"""The sidecar is the exported file's name with this appended: policy.jaxexport -> policy.jaxexport.json."""


def sidecar_path(path: str | Path) -> Path:
    return Path(str(path) + SIDECAR_SUFFIX)


def parse_platforms(platforms: str | Sequence[str]) -> tuple[str, ...]:
    """('cpu', 'cuda') from 'cpu,cuda' or a sequence; ValueError naming an unknown platform."""
    names = [p.strip().lower() for p in (platforms.split(",") if isinstance(platforms, str) else platforms)]
    names = [p for p in names if p]
    if not names:
        raise ValueError(f"platforms: give at least one of {', '.join(PLATFORMS)}, comma-separated")
    for name in names:
        if name not in PLATFORMS:
            hint = " (GPUs are cuda or rocm)" if name == "gpu" else ""
            raise ValueError(f"platforms={','.join(names)}: unknown platform {name!r}{hint}; choose from "
                             f"{', '.join(PLATFORMS)}, comma-separated")
    return tuple(dict.fromkeys(names))


def parse_batch(batch: int | str | None) -> int | None:
    """None (any batch) for 'dynamic' or None; a positive int for a fixed batch; ValueError otherwise."""
    if batch is None or (isinstance(batch, str) and batch.strip().lower() == "dynamic"):
        return None
    try:
        value = int(batch)
    except (TypeError, ValueError):
        value = 0
    if value < 1 or isinstance(batch, bool):
        raise ValueError(f"batch={batch!r}: give a positive number of observations per call, or 'dynamic'")
    return value


def policy_function(step: Callable, has_mask: bool, recurrent: bool, stochastic: bool,
                    carry_tree: Any = None) -> Callable:
    """The function that is exported: f(obs, [action_mask], [carry, first], [key]) (see the module docstring)
    around a policy step function (jaxppo.playback). The carry crosses the boundary as a flat tuple of arrays
    (carry_tree: the step's carry structure), so a caller without jaxppo can build the first one from the sidecar."""
    import jax

    def policy(*inputs):
        inputs = list(inputs)
        obs = inputs.pop(0)
        mask = inputs.pop(0) if has_mask else None
        carry, first = (jax.tree.unflatten(carry_tree, inputs.pop(0)), inputs.pop(0)) if recurrent else (None, None)
        key = jax.random.wrap_key_data(inputs.pop(0)) if stochastic else None
        actions, carry = step(obs, mask, carry, first, key)
        return (actions, tuple(jax.tree.leaves(carry))) if recurrent else actions

    return policy


def _spec(shape: tuple, dtype: Any) -> dict[str, Any]:
    return {"shape": [d if isinstance(d, int) else str(d) for d in shape], "dtype": np.dtype(dtype).name}


def export_policy(run: Any, out: str | Path, *, seed_index: int = 0, stochastic: bool = False,
                  batch: int | str | None = "dynamic",
                  platforms: str | Sequence[str] = DEFAULT_PLATFORMS) -> "ExportedPolicy":
    """Serialise one seed's policy of a trained run with jax.export; write out and its JSON sidecar (replaced if
    they exist).

    Args:
      run: a finished run folder, or what jaxppo.load returns.
      out: the file to write (conventionally *.jaxexport); the sidecar is out + '.json'.
      seed_index: which seed of a multi-seed run.
      stochastic: export a sampling policy (it then takes PRNG key data as its last input); default greedy.
      batch: observations per call: 'dynamic' (any) or a fixed positive number.
      platforms: where the file may run: a subset of PLATFORMS (a string 'cpu,cuda' or a sequence).

    Returns the written policy, as load_exported(out) would read it. ValueError (one line, naming the argument) for
    an unknown platform, a bad batch, or a missing package.
    """
    import jax
    from jax import export

    import jaxppo
    from jaxppo import outputs
    from jaxppo.envs import make_env
    from jaxppo.playback import run_step

    platforms, fixed = parse_platforms(platforms), parse_batch(batch)
    _check_serialiser()
    loaded = run if hasattr(run, "act") and hasattr(run, "config") else jaxppo.load(run, seed=seed_index)
    config = loaded.config
    spec = make_env(config.env).spec
    recurrent, has_mask = bool(config.recurrent), bool(spec.has_action_mask)
    step = run_step(loaded.act, recurrent, stochastic)
    size = export.symbolic_shape("B")[0] if fixed is None else fixed

    obs = jax.ShapeDtypeStruct((size, *spec.obs_shape), jax.numpy.float32)
    mask = jax.ShapeDtypeStruct((size, spec.num_actions), jax.numpy.bool_)
    first = jax.ShapeDtypeStruct((size,), jax.numpy.bool_)
    key_data = jax.random.key_data(jax.random.key(0))
    inputs = {"obs": obs}
    if has_mask:
        inputs["action_mask"] = mask
    carry_tree = None
    if recurrent:
        one = jax.eval_shape(lambda: step(jax.numpy.zeros((1, *spec.obs_shape)), None if not has_mask else
                                          jax.numpy.ones((1, spec.num_actions), bool), None,
                                          jax.numpy.ones((1,), bool), None)[1])
        carry_tree = jax.tree.structure(one)
        inputs["carry"] = tuple(jax.ShapeDtypeStruct((size, *s.shape[1:]), s.dtype) for s in jax.tree.leaves(one))
        inputs["first"] = first
    if stochastic:
        inputs["key"] = jax.ShapeDtypeStruct(key_data.shape, key_data.dtype)

    function = policy_function(step, has_mask, recurrent, stochastic, carry_tree)
    exported = export.export(jax.jit(function), platforms=platforms)(*inputs.values())
    data = bytes(exported.serialize())

    def described(name, value):
        return {"name": name, **_spec(value.shape, value.dtype)} if name != "carry" else {
            "name": name, "leaves": [_spec(leaf.shape, leaf.dtype) for leaf in jax.tree.leaves(value)]}

    actions = exported.out_avals[0]
    meta = {
        "format": FORMAT,
        "sha256": outputs.sha256(data),
        "jaxppo_version": jaxppo.__version__,
        "jax_version": jax.__version__,
        "env": config.env,
        "source": {"run": str(run) if isinstance(run, (str, Path)) else None, "seed_index": int(seed_index)},
        "platforms": list(platforms),
        "batch": fixed,
        "stochastic": bool(stochastic),
        "observation": _spec(spec.obs_shape, np.float32),
        "action": ({"kind": "continuous", **_spec(spec.action_shape, np.float32),
                    "low": np.asarray(spec.action_low).tolist(), "high": np.asarray(spec.action_high).tolist()}
                   if spec.continuous else {"kind": "discrete", "num_actions": int(spec.num_actions),
                                            **_spec((), actions.dtype)}),
        "action_mask": has_mask,
        "memory": ({"kind": config.memory, "carry": [_spec(leaf.shape[1:], leaf.dtype)
                                                     for leaf in jax.tree.leaves(inputs["carry"])]}
                   if recurrent else None),
        "key": ({"impl": str(jax.random.key_impl(jax.random.key(0))), **_spec(key_data.shape, key_data.dtype)}
                if stochastic else None),
        "inputs": [described(name, value) for name, value in inputs.items()],
        "outputs": [{"name": "actions", **_spec(actions.shape, actions.dtype)}]
                   + ([{"name": "carry", "leaves": [_spec(a.shape, a.dtype) for a in exported.out_avals[1:]]}]
                      if recurrent else []),
        "config": outputs.config_to_dict(config),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    outputs.write_bytes(out, data)
    outputs.write_json(sidecar_path(out), meta)
    return ExportedPolicy(out, meta, exported)


def _check_serialiser() -> None:
    if importlib.util.find_spec("flatbuffers") is None:
        raise ValueError("jax.export (de)serialisation needs the flatbuffers package: pip install -e \".[export]\" "
                         "(or pip install flatbuffers)")


# ------------------------------------------------------------------------------------------------- reading
class ExportedPolicy(NamedTuple):
    """An exported policy file, its sidecar, and the deserialised jax.export.Exported."""

    path: Path
    meta: dict[str, Any]
    exported: Any  # jax.export.Exported

    @property
    def env_id(self) -> str:
        return self.meta["env"]

    @property
    def batch(self) -> int | None:
        return self.meta["batch"]

    @property
    def recurrent(self) -> bool:
        return self.meta["memory"] is not None

    @property
    def stochastic(self) -> bool:
        return bool(self.meta["stochastic"])

    def check_stochastic(self, stochastic: bool) -> None:
        """ValueError unless the file acts the way asked: it samples exactly when exported stochastic."""
        if stochastic == self.stochastic:
            return
        if self.stochastic:
            raise ValueError(f"{self.path} was exported stochastic: it samples, so ask for sampled actions "
                             "(--stochastic, stochastic=True), or export the run again without it")
        raise ValueError(f"{self.path} was exported greedy: it cannot sample; drop --stochastic (stochastic=False), "
                         "or export the run again with it")


def load_exported(path: str | Path) -> ExportedPolicy:
    """Read an exported policy and its sidecar: the file's SHA-256 is checked against the sidecar before it is
    deserialised. ValueError naming the file when either is missing, damaged or of another kind."""
    from jax import export

    from jaxppo import outputs

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"{path} is not readable ({type(error).__name__}); give a file written by jaxppo export") \
            from None
    meta = outputs.read_json(sidecar_path(path), "an exported policy's sidecar")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{sidecar_path(path)} is not a jaxppo exported-policy sidecar (format "
                         f"{meta.get('format')!r}, expected {FORMAT!r})")
    if meta.get("sha256") != outputs.sha256(data):
        raise ValueError(f"{path} does not match the checksum in {sidecar_path(path).name}: the file is damaged or "
                         "was edited")
    _check_serialiser()
    return ExportedPolicy(path, meta, export.deserialize(bytearray(data)))


def exported_step(policy: ExportedPolicy) -> Callable:
    """The policy step function (jaxppo.playback) that calls the exported file; carry=None starts from zeros."""
    import jax
    import jax.numpy as jnp

    names = [entry["name"] for entry in policy.meta["inputs"]]
    exported = policy.exported

    def zero_carry(batch: int):
        args, _ = jax.tree.unflatten(exported.in_tree, exported.in_avals)
        return jax.tree.map(lambda a: jnp.zeros((batch, *a.shape[1:]), a.dtype), args[names.index("carry")])

    def step(obs, action_mask, carry, first, key):
        if policy.recurrent and carry is None:
            carry = zero_carry(obs.shape[0])
        values = {"obs": obs, "action_mask": action_mask, "carry": carry, "first": first,
                  "key": None if key is None else jax.random.key_data(key)}
        out = exported.call(*[values[name] for name in names])
        return out if policy.recurrent else (out, carry)

    return step


def check_platform(policy: ExportedPolicy) -> None:
    """ValueError unless the file was exported for the platform jax runs on here."""
    import jax

    here = jax.default_backend()
    names = {"gpu": ("cuda", "rocm")}.get(here, (here,))
    if not set(names) & set(policy.meta["platforms"]):
        raise ValueError(f"{policy.path} was exported for {', '.join(policy.meta['platforms'])}, not for this "
                         f"machine's {here}; export it again with platforms including {names[0]}")


def evaluate_exported(policy: ExportedPolicy, num_episodes: int = 10, seed: int = 0,
                      max_steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(returns float64 [N], lengths int [N]) of N complete episodes played by the exported file (jitted, in
    parallel; each up to its first end, at most max_steps steps, default the env's time limit)."""
    import jax

    from jaxppo.envs import make_env
    from jaxppo.playback import episode_lengths, episode_returns, play

    check_platform(policy)
    env = make_env(policy.env_id)
    if list(env.spec.obs_shape) != policy.meta["observation"]["shape"]:
        raise ValueError(f"{policy.path}: exported for observations {policy.meta['observation']['shape']}, but "
                         f"{policy.env_id} now gives {list(env.spec.obs_shape)}")
    if num_episodes < 1 or (policy.batch is not None and num_episodes > policy.batch):
        raise ValueError(f"num_episodes={num_episodes}: must be at least 1"
                         + (f" and at most the exported batch {policy.batch}" if policy.batch else ""))
    num_steps = max_steps or env.spec.max_episode_steps
    if num_steps is None:
        raise ValueError(f"{policy.env_id} has no time limit; pass max_steps")
    num_envs = policy.batch or num_episodes
    step = exported_step(policy)
    played = jax.jit(lambda key: play(env, step, key, num_envs, num_steps))(jax.random.key(seed))
    lengths = episode_lengths(jax.device_get(played.done))
    returns = episode_returns(jax.device_get(played.rewards), lengths)
    return returns[:num_episodes], lengths[:num_episodes]
