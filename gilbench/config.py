"""Typed run configuration: dataclasses with one doc line per field, YAML files and ``--set`` overrides.

How a run's config is put together from these (defaults, task, method, file, flags, ``--set``): gilbench/resolve.py.
Each stage's cache key is a hash of only the fields that change that stage's output.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gilbench.errors import GilbenchError
from gilbench.registry import did_you_mean


@dataclass
class ModelConfig:
    policy: str = "tiny"  # preset (tiny, smollm2-135m), hub id or local path of the policy
    reward: str = "auto"  # reward-model backbone; auto: minilm for smollm2-135m, else the policy's
    critic: str = "policy"  # value-model trunk: policy (a copy of the SFT policy), shared (a head on the policy's own trunk: one forward for both, the value loss also trains the trunk) or reward (needs its tokenizer)
    lora: bool = False  # train LoRA adapters instead of all weights (reference = adapters disabled)
    lora_r: int = 16  # LoRA rank
    lora_alpha: int = 32  # LoRA scaling numerator
    critic_lora: bool = False  # train LoRA adapters (lora_r, lora_alpha) on the critic's trunk, frozen in half precision, instead of all of it
    gradient_checkpointing: bool = (
        False  # recompute policy and critic activations in the backward (less memory, ~30% more compute)
    )
    attention: str = "auto"  # attention kernel of the RL policy, reference and critic, and of the eval's sampling: eager, sdpa or auto (eager on CPU, where it trains ~25% faster at our lengths; sdpa elsewhere)
    share_prompt_prefix: bool = True  # with eager attention (the CPU default): run the opening all prompts of a batch share (a chat template's system message) once, not once per row, and drop the left-pad columns no row of a minibatch uses; the same computation up to float rounding. sdpa runs every row whole, as do models whose forward drops extra attention arguments in the installed transformers (a warning says so; GPT-2 on 5.0)


@dataclass
class SFTConfig:
    enabled: bool = True  # fine-tune the policy on the task's SFT text before RL (false: start from the base model)
    epochs: int = 1  # passes over the SFT examples
    lr: float = 5e-5  # AdamW learning rate
    batch_size: int = 8  # sequences per optimizer step
    max_length: int = 192  # tokens per prompt+response; longer ones are cut
    max_examples: int = 512  # SFT examples used (0 = all)


@dataclass
class RewardModelConfig:
    epochs: int = 1  # passes over the preference pairs
    lr: float = 5e-5  # AdamW learning rate
    batch_size: int = 16  # pairs per optimizer step
    micro_batch_size: int = 0  # pairs per forward/backward, grouped by text length so short ones are not padded to the batch's longest (same loss; dropout draws differ); 0 = the whole batch at once
    max_length: int = 192  # tokens per prompt+response
    max_pairs: int = 2048  # training pairs used (0 = all)
    pooling: str = "auto"  # auto | cls | mean | last: how hidden states become the score (gilbench.models.reward); auto: the architecture's own head (cls for encoders, last token for decoders)


@dataclass
class RLConfig:
    steps: int = 40  # PPO iterations (rollout + update)
    rollout_batch_size: int = 16  # prompts sampled per iteration
    minibatch_size: int = 16  # samples per optimizer step
    micro_batch_size: int = 8  # samples per forward/backward (gradient accumulation inside a minibatch)
    ppo_epochs: int = 2  # passes over each rollout batch
    max_prompt_length: int = 96  # prompt tokens (longer prompts are cut from the left)
    max_new_tokens: int = 32  # response tokens sampled per prompt
    temperature: float = 1.0  # sampling temperature of rollouts
    top_p: float = 1.0  # nucleus sampling of rollouts (1 = off)
    stop_at_eos: bool = True  # end a response at EOS (false: always max_new_tokens, as in throughput benchmarks)
    forward_batch_size: int = 32  # samples per no-grad forward pass during rollouts
    lr: float = 1e-5  # policy AdamW learning rate
    critic_lr: float = 5e-5  # value model AdamW learning rate
    critic_warmup_steps: int = 0  # first N steps train only the value model (the policy stays the start policy)
    clip_range: float = 0.2  # PPO ratio clip
    clip_range_value: float = 0.2  # value clip around the rollout values
    vf_coef: float = 0.1  # weight of the value loss
    gamma: float = 1.0  # discount
    lam: float = 0.95  # GAE lambda
    kl_coef: float = 0.05  # KL penalty coefficient (initial value when adaptive)
    kl_estimator: str = "k1"  # per-token KL in the reward: k1 | k2 | k3
    adaptive_kl: bool = False  # adjust kl_coef toward kl_target (Ziegler et al. controller)
    kl_target: float = 6.0  # adaptive controller: target sequence KL
    kl_horizon: int = 10000  # adaptive controller: horizon in samples
    whiten_advantages: bool = True  # normalise advantages per batch
    reward_norm: bool = False  # divide scores by a running std (and subtract the running mean)
    reward_clip: float = 0.0  # clip scores to +-reward_clip after normalising (0 = off)
    max_grad_norm: float = 1.0  # gradient clipping
    missing_eos_penalty: float = 0.0  # subtracted from the score of responses that never emit EOS (0 = off)
    checkpoint_every: int = (
        10  # save a resumable checkpoint every N steps (0 = never; the last step only with keep_checkpoint)
    )
    keep_checkpoint: bool = (
        False  # keep the last resumable checkpoint once the run finished (policy + optimizer states: ~20x the policy)
    )
    log_rollouts_every: int = (
        1  # write every Nth step's samples to rollouts.jsonl, for `gilbench judge-curve` (0 = never)
    )


@dataclass
class GenerateConfig:
    max_prompts: int = 64  # prompts per eval split
    max_new_tokens: int = 48  # response tokens
    temperature: float = 0.7  # 0 = greedy
    top_p: float = 0.9  # nucleus sampling
    batch_size: int = 16  # prompts per generate call


@dataclass
class RunConfig:
    method: str = "ppo-kl"  # registered method name (gilbench ls methods)
    task: str = "chitchat"  # registered task name (gilbench ls tasks)
    seed: int = 0  # training seed; the CLI runs a list one by one
    split_seed: int = 0  # seed of the task's train/eval split, fixed across training seeds so all see the same prompts
    limit: int = 0  # cap prompts / pairs / examples per split for quick runs (0 = no cap)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    mixed_precision: str = "auto"  # auto | no (= fp32) | bf16 | fp16; auto: bf16 where the GPU/CPU computes it natively (gilbench.models.precision)
    data_dir: str = ""  # local copies of hub datasets in their public layout
    output_dir: str = (
        "runs"  # run store root (committed results live in results/runs: pass --output-dir results/runs to write there)
    )
    tensorboard: bool = False  # also write TensorBoard event files (the same as report_to including tensorboard)
    report_to: str = (
        "none"  # experiment trackers of every training stage: none | comma list of tensorboard, wandb, mlflow, trackio
    )
    model: ModelConfig = field(default_factory=ModelConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rm: RewardModelConfig = field(default_factory=RewardModelConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    method_args: dict = field(default_factory=dict)  # the method's own config fields (see `gilbench ls methods -v`)
    variant: str = ""  # names a setting of the method (e.g. b0.1 for a beta sweep): the run is stored and tabled as <method>@<variant>, beside the method's own runs; empty = none

    def run_name(self) -> str:
        """The run's name in the store and in tables: the method, or ``<method>@<variant>``."""
        return f"{self.method}@{self.variant}" if self.variant else self.method


# ---------------------------------------------------------------- YAML numbers
class _Loader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, where ``1e-5`` (no dot) is a string; users mean a float, as in YAML 1.2."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    """Safe YAML with YAML 1.2 floats; used for --config, --set and task files."""
    return yaml.load(text, Loader=_Loader)


# ---------------------------------------------------------------- typed overrides


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check (and gently convert) ``value`` against a dataclass field type, or raise a clear error."""
    if isinstance(tp, str):
        tp = eval(tp, vars(typing) | {"__builtins__": __builtins__})
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except GilbenchError as e:
                errors.append(str(e))
        raise GilbenchError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise GilbenchError(f"{where}: expected bool (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise GilbenchError(f"{where}: expected int, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise GilbenchError(f"{where}: expected float, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise GilbenchError(f"{where}: expected str, got {value!r}")
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise GilbenchError(f"{where}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)[:1] or (Any,)
        return [coerce(v, item_tp, f"{where}[{i}]") if item_tp is not Any else v for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return value
        raise GilbenchError(f"{where}: expected a mapping, got {value!r}")
    return value


def parse_cli_value(text: str) -> Any:
    """``--set key=value`` values are YAML scalars: 3, 0.1, true, null, [1, 2], text."""
    try:
        return yaml_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def update_dataclass(obj: Any, updates: dict, where: str = "") -> None:
    """Apply a nested mapping of updates to a dataclass instance, type-checking each field."""
    types_ = field_types(type(obj))
    for key, value in updates.items():
        path = f"{where}{key}"
        if key not in types_:
            raise GilbenchError(
                f"unknown config field '{path}'.{did_you_mean(key, list(types_))} Fields here: {', '.join(types_)}"
            )
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise GilbenchError(f"{path}: expected a mapping of {type(current).__name__} fields, got {value!r}")
            update_dataclass(current, value, f"{path}.")
        elif key == "method_args" and isinstance(value, dict):
            current.update(value)
        else:
            setattr(obj, key, coerce(value, types_[key], f"config field {path}"))


def nest(dotted: str, value: Any) -> dict:
    out: dict = {}
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def resolve_set_key(key: str, cfg: RunConfig, method_config_cls: type | None) -> str:
    """Bare ``--set n_groups=4`` names a field of the method's config or of one unique section."""
    if "." in key or key in field_types(RunConfig):
        return "method_args." + key.split(".", 1)[1] if key.startswith("method.") else key
    if method_config_cls is not None and key in field_types(method_config_cls):
        return f"method_args.{key}"
    owners = [
        name for name, value in vars(cfg).items() if dataclasses.is_dataclass(value) and key in field_types(type(value))
    ]
    if len(owners) == 1:
        return f"{owners[0]}.{key}"
    if len(owners) > 1:
        raise GilbenchError(
            f"--set {key}: ambiguous, it is a field of {', '.join(owners)}; write e.g. {owners[0]}.{key}"
        )
    raise GilbenchError(
        f"--set {key}: no such config field (try `gilbench ls methods -v` for method fields, or a section like rl.{key})"
    )


def yaml_problem(e: yaml.YAMLError) -> str:
    """A parser error in one short phrase with its place: PyYAML's own message spans several lines."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def read_yaml_mapping(path: str | Path, what: str, fix: str) -> dict:
    """The mapping in the YAML file ``path`` (an empty file is ``{}``). A missing, unreadable or malformed file is one
    GilbenchError naming ``what`` the file is (``--config``, ``task file``...) and how to ``fix`` it."""
    path = Path(path)
    if not path.is_file():
        raise GilbenchError(f"{what} {path}: {'is a folder' if path.is_dir() else 'no such file'}; {fix}")
    try:
        data = yaml_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise GilbenchError(f"{what} {path} is not UTF-8 text (byte {e.start}); {fix}") from None
    except yaml.YAMLError as e:
        raise GilbenchError(f"{what} {path} is not valid YAML ({yaml_problem(e)}); {fix}") from None
    except OSError as e:
        raise GilbenchError(f"{what} {path}: cannot read it ({e.strerror or e}); check its permissions") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise GilbenchError(f"{what} {path} must be a mapping of key: value fields, got {type(data).__name__}; {fix}")
    return data


def load_yaml_config(path: str | Path) -> dict:
    return read_yaml_mapping(path, "--config", "give a YAML file of config fields")


def build_method_config(method_config_cls: type | None, args: dict, method: str) -> Any:
    if method_config_cls is None:
        if args:
            raise GilbenchError(f"method {method} takes no method_args, got {sorted(args)}")
        return None
    obj = method_config_cls()
    update_dataclass(obj, args, "method.")
    return obj


def to_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def stable_hash(*parts: Any, length: int = 12) -> str:
    text = json.dumps([to_dict(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
