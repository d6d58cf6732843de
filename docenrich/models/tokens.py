"""The embedder's tokenizer alone, for sizing snippets where they are cut (no torch, no model weights).

The docs worker loads only the `tokenizers` file of the embedder it expects the model worker to
use, so snippets are sized in the model's own tokens and never run past its max_seq_length.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

# Tokens the model adds around every input ([CLS] ... [SEP], <s> ... </s>).
SPECIAL_TOKENS = 2


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens as one embedder does, and the most it reads."""

    name: str
    max_tokens: int  # content tokens per input, special tokens excluded
    _tokenizer: object

    def __call__(self, text: str) -> int:
        """Content tokens of `text` (no special tokens)."""
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


def _folder(name: str) -> Path | None:
    """The model's local folder: a path, or the hub cache's snapshot of a hub name."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        cached = try_to_load_from_cache(name, "tokenizer.json")
    except ValueError:  # not a hub name either (HFValidationError is a ValueError)
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def _max_seq_length(folder: Path) -> int | None:
    """The length the model reads: sentence-transformers' setting, else the tokenizer's or config's."""
    for file, key in (("sentence_bert_config.json", "max_seq_length"),
                      ("tokenizer_config.json", "model_max_length"),
                      ("config.json", "max_position_embeddings")):
        try:
            value = json.loads((folder / file).read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        # tokenizer_config.json says 1e30 when it does not know.
        if isinstance(value, int) and 0 < value < 1_000_000:
            if key == "max_position_embeddings" and value > 2:
                # RoBERTa-style position ids start after the padding index.
                return value - 2 if value in (514, 8194) else value
            return value
    return None


@lru_cache(maxsize=4)
def token_counter(name: str) -> TokenCounter | None:
    """The tokenizer of a model folder or cached hub model, or None when it is not on this host."""
    folder = _folder(name)
    if folder is None or not (folder / "tokenizer.json").is_file():
        log.info("no tokenizer.json for %s on this host: snippets are sized by an estimate", name)
        return None
    try:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as exc:  # a damaged or unknown file: sizing falls back to the estimate
        log.warning("could not load the tokenizer of %s: %s", name, exc)
        return None
    tokenizer.no_truncation()
    tokenizer.no_padding()
    limit = _max_seq_length(folder) or 512
    return TokenCounter(name, max(16, limit - SPECIAL_TOKENS), tokenizer)


def embedder_counter(settings) -> TokenCounter | None:
    """The tokenizer of the embedder the model worker will use: the configured one, else its fallback."""
    for name in (settings.embedder_model, settings.fallback_embedder):
        try:
            counter = token_counter(settings.resolve_model(name))
        except RuntimeError:  # the bundled model's package is not installed here
            counter = None
        if counter is not None:
            return counter
    return None
