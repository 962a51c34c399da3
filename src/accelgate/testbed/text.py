"""Tokenizers of the world's language, built offline, and what the text encoders learn.

Why a reduced vocabulary: the world has a few dozen words, and a 49408-token embedding
table would be 90% of a tiny text encoder's weights. The tokenizers are still the real
classes (transformers `CLIPTokenizer` and `T5Tokenizer`, open_clip's `SimpleTokenizer`), so
every pipeline and metric tokenizes through its usual code path.

- CLIP: byte-level BPE in CLIP's own layout (256 byte symbols, their 256 end-of-word
  forms, one token per merge, then `<|startoftext|>` and `<|endoftext|>`), with merges
  built here so that every world word is exactly one token and any other text still
  tokenizes (into bytes and partial merges). The merges file is written in open_clip's
  format too, so open_clip's `SimpleTokenizer` gives the same ids as the transformers one.
  `model_max_length` is 32 (the longest caption is 26 tokens): shorter text sequences keep
  the cross-attention cheap in every pipeline, which pads to the tokenizer's maximum.
- T5: a Unigram model with one piece per word ("▁red") and single characters as fallback,
  T5's layout (<pad>=0, </s>=1, <unk>=2).
"""
from __future__ import annotations

import gzip
import string
from pathlib import Path

import torch

from accelgate.models.tokenizers import CLIP_EOS, clip_vocab
from accelgate.testbed import world

CLIP_MAX_LENGTH = 32
T5_MAX_LENGTH = 32


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE of one lower-case word (the last symbol carries </w>)."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        a, b = parts[i], parts[i + 1]
        merged, j = [], 0
        while j < len(parts):
            if j < len(parts) - 1 and parts[j] == a and parts[j + 1] == b:
                merged.append(a + b)
                j += 2
            else:
                merged.append(parts[j])
                j += 1
        parts = merged
    return parts


def clip_merges(words: list[str] | None = None) -> list[tuple[str, str]]:
    """Merges that make each world word one token, found by repairing BPE until it holds.

    Start with each word's left-to-right merges; a merge of one word can fire inside
    another first ("r e" of "red" inside "green") and strand it in pieces, so merges for the
    pieces BPE actually reached are appended until every word comes out whole.
    """
    words = sorted(set(words or world.words()))
    merges: list[tuple[str, str]] = []
    for _ in range(50):
        ranks = {m: i for i, m in enumerate(merges)}
        broken = [(w, _bpe(w, ranks)) for w in words if len(_bpe(w, ranks)) > 1]
        if not broken:
            return merges
        for word, parts in broken:
            ranks = {m: i for i, m in enumerate(merges)}
            parts = _bpe(word, ranks)
            while len(parts) > 1:
                merges.append((parts[0], parts[1]))
                parts = [parts[0] + parts[1]] + parts[2:]
    raise RuntimeError("could not build a BPE that keeps every world word whole")


def clip_tokenizer(max_length: int = CLIP_MAX_LENGTH):
    """A transformers CLIPTokenizer over the world's BPE (pad = end of text, as openai CLIP)."""
    from transformers import CLIPTokenizer

    merges = clip_merges()
    vocab = clip_vocab(merges)
    if len(vocab) != 512 + len(merges) + 2:
        raise RuntimeError("duplicate merge results: the open_clip and transformers ids would disagree")
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length, pad_token=CLIP_EOS)


def write_open_clip_bpe(path: Path) -> Path:
    """The merges in open_clip's `bpe_simple_vocab` format (a header line, then 'a b' lines)."""
    lines = ["#version: accelgate-testbed"] + [f"{a} {b}" for a, b in clip_merges()]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
        f.write("\n".join(lines).encode("utf-8"))  # no trailing newline: open_clip would read an empty merge
    return path


def open_clip_tokenizer(bpe_path: Path, context_length: int = CLIP_MAX_LENGTH):
    """open_clip's SimpleTokenizer on the world's merges (ids equal the transformers tokenizer's)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(bpe_path=str(bpe_path), context_length=context_length)


def t5_tokenizer(max_length: int = T5_MAX_LENGTH):
    from transformers import T5Tokenizer

    entries = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -8.0)]
    entries += [("▁" + w, -2.0) for w in world.words()]
    entries += [(c, -10.0) for c in string.ascii_lowercase + string.digits + string.punctuation]
    return T5Tokenizer(vocab=entries, extra_ids=0, model_max_length=max_length)


# ---------------------------------------------------------------- what the encoders learn
SLOT_VALUES = {
    "shape": world.SHAPES,
    "colour": world.COLOUR_NAMES,
    "position": world.POSITIONS,
    "size": world.SIZE_NAMES,
}
SLOTS = [(obj, attr) for obj in (0, 1) for attr in SLOT_VALUES] + [("scene", "background"), ("scene", "kind"),
                                                                    ("edit", "kind"), ("edit", "value")]
EDIT_VALUES = tuple(dict.fromkeys((*world.COLOUR_NAMES, *world.SHAPES, *world.BACKGROUND_NAMES, *world.SIZE_NAMES)))


def slot_sizes() -> list[int]:
    """Classes per slot, each with a last class meaning 'not said'."""
    sizes = []
    for owner, attr in SLOTS:
        if owner == "scene":
            n = len(world.BACKGROUND_NAMES) if attr == "background" else len(world.BACKGROUND_KINDS)
        elif owner == "edit":
            n = len(world.EDIT_KINDS) if attr == "kind" else len(EDIT_VALUES)
        else:
            n = len(SLOT_VALUES[attr])
        sizes.append(n + 1)
    return sizes


def caption_targets(scene: world.Scene) -> list[int]:
    sizes = slot_sizes()
    out = []
    for (owner, attr), n in zip(SLOTS, sizes):
        if owner == "scene":
            names = world.BACKGROUND_NAMES if attr == "background" else world.BACKGROUND_KINDS
            out.append(names.index(scene.background if attr == "background" else scene.kind))
        elif owner == "edit":
            out.append(n - 1)
        elif owner < len(scene.objects):
            out.append(SLOT_VALUES[attr].index(getattr(scene.objects[owner], attr)))
        else:
            out.append(n - 1)
    return out


def instruction_targets(edit: world.Edit) -> list[int]:
    sizes = slot_sizes()
    out = [n - 1 for n in sizes]
    out[SLOTS.index(("edit", "kind"))] = world.EDIT_KINDS.index(edit.kind)
    word = edit.instruction.split()[-1]
    out[SLOTS.index(("edit", "value"))] = EDIT_VALUES.index(word)
    if edit.kind != "background":
        out[SLOTS.index((0, "shape"))] = world.SHAPES.index(edit.source.main.shape)
    return out


def text_batch(seed: int, step: int, batch: int) -> tuple[list[str], torch.Tensor]:
    """Captions (3/4) and edit instructions (1/4) with their slot targets, a pure function of the step."""
    texts, targets = [], []
    for i in range(batch):
        index = step * batch + i
        if i % 4 == 3:
            edit = world.edit_at(seed, index)
            texts.append(edit.instruction)
            targets.append(instruction_targets(edit))
        else:
            scene = world.scene_at(seed, index)
            texts.append(scene.caption())
            targets.append(caption_targets(scene))
    return texts, torch.tensor(targets)
