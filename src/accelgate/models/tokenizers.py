"""The CLIP and T5 tokenizers of the offline test pipelines and metric models, built without a hub.

One builder for both users (the tiny pipelines and the random-weight metric models): the
real CLIP BPE vocabulary ships in the open_clip wheel (`bpe_simple_vocab_16e6.txt.gz`), so
the exact openai CLIP tokenizer (49408 tokens) can be rebuilt from it the way CLIP builds
it (byte symbols, their end-of-word forms, one token per merge, then the two specials). The
file is located without importing open_clip (a 3 s import).
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import math
from pathlib import Path

# CLIP: 256 byte symbols, 256 byte symbols ending a word, 48894 merges, 2 specials = 49408.
_CLIP_MERGES = 49152 - 256 - 2
_T5_PIECES = 8000  # vocabulary of the tiny T5: first merges of the CLIP BPE = most frequent


def clip_bpe_file() -> Path:
    """The CLIP BPE vocabulary inside the installed open_clip wheel (found without importing it)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the tiny models build their CLIP tokenizer from the BPE vocabulary shipped with "
            "open_clip, which is not installed: pip install open_clip_torch"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"open_clip is installed but its BPE vocabulary is missing: {path}")
    return path


CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"


def clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP's token layout over `merges`: 256 byte symbols, their 256 end-of-word forms, one
    token per merge, then the two specials (open_clip's SimpleTokenizer builds the same ids).
    A merge whose result repeats an earlier token leaves the dict shorter than the list."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [CLIP_BOS, CLIP_EOS]
    return {tok: i for i, tok in enumerate(tokens)}


@functools.lru_cache(maxsize=1)
def _clip_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The openai CLIP vocabulary and merges, in the same order as open_clip's SimpleTokenizer."""
    lines = gzip.open(clip_bpe_file()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _CLIP_MERGES + 1]]
    return clip_vocab(merges), merges


def clip_tokenizer(max_length: int = 77):
    """The real CLIP tokenizer (ids identical to openai/clip-vit-large-patch14's), offline."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=max_length)


def t5_tokenizer():
    """A T5 (Unigram) tokenizer over the most frequent CLIP pieces.

    No sentencepiece model of T5 ships in any wheel, so the pieces come from the first
    `_T5_PIECES` CLIP merges (BPE merge order approximates frequency; the score is a
    log-rank). Word-final CLIP pieces (`cat</w>`) become word-initial sentencepiece pieces
    (`▁cat`), which is exact for whole words. Layout follows T5: <pad>=0, </s>=1, <unk>=2.
    """
    from transformers import T5Tokenizer

    vocab, _ = _clip_vocab()
    pieces: dict[str, float] = {}
    for rank, token in enumerate(list(vocab)[: 512 + _T5_PIECES]):
        text = "▁" + token[:-4] if token.endswith("</w>") else token
        if text.isascii() and text.strip() and text not in pieces:
            pieces[text] = -math.log(rank + 2.0)
    entries = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    entries += [(p, s) for p, s in pieces.items() if p != "▁"]
    return T5Tokenizer(vocab=entries, extra_ids=0, model_max_length=512)
