"""Prompt formats: the same task text becomes a chat turn for chat models, or stays plain."""

from __future__ import annotations

from gilbench.errors import GilbenchError


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def format_prompt(tokenizer, text: str, prompt_format: str = "chat") -> str:
    """The string the policy continues from."""
    if prompt_format == "chat" and has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
    if prompt_format in ("chat", "plain"):
        return text if prompt_format == "plain" else f"User: {text}\nAssistant:"
    raise GilbenchError(f"unknown prompt_format {prompt_format!r}; use chat or plain")


def format_example(tokenizer, prompt: str, response: str, prompt_format: str = "chat") -> tuple[str, str]:
    """(formatted prompt, response text ending in EOS): SFT trains on the second part only."""
    eos = tokenizer.eos_token or ""
    head = format_prompt(tokenizer, prompt, prompt_format)
    sep = "" if head.endswith((" ", "\n")) or prompt_format == "chat" and has_chat_template(tokenizer) else " "
    return head, sep + response.strip() + eos
