"""CLIP text tokenizer built from OpenAI's ``bpe_simple_vocab_16e6.txt.gz``.

SAM3's text encoder is CLIP's, and the seed ships only the original OpenAI BPE merges file
(SAM3_BPE_PATH), not Hugging Face's ``vocab.json``/``merges.txt``. OpenAI's ``SimpleTokenizer``
derives the vocabulary from the merges alone, so we do the same and hand the result to
transformers' (tokenizers-backed, i.e. fast) ``CLIPTokenizer``:

* skip the header line, take the next ``49152 - 256 - 2`` merges (fewer if the file is short);
* vocabulary = the 256 byte-level symbols (in ``bytes_to_unicode`` order), the same symbols with
  ``</w>`` appended, one entry per merge (the two halves joined), then ``<|startoftext|>`` and
  ``<|endoftext|>``. With the real file that is 49408 entries and "a dog" encodes as
  ``49406, 320, 1929, 49407``.
"""

from __future__ import annotations

import gzip
import itertools
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
# OpenAI's SimpleTokenizer reads exactly this many merge lines after the header.
MAX_MERGES = 49152 - 256 - 2
BPE_HEADER = "#version: 0.2 - trained by OpenAI's bpe (test vocabulary)"

# Words the small test vocabulary knows as single tokens; "visual" is the text the SAM3
# processor substitutes when only exemplar boxes are given.
SMALL_VOCAB_WORDS: tuple[str, ...] = (
    "dog", "cat", "person", "bus", "car", "truck", "bird", "horse", "sheep", "cow",
    "yellow", "school", "red", "blue", "green", "white", "black", "man", "woman", "people",
    "the", "of", "and", "in", "on", "with", "visual", "object", "ball", "tree", "shoe",
    "bicycle", "bike", "boat", "chair", "cup", "phone", "face", "hand", "head",
)


class BpeFileError(ValueError):
    """The BPE file is missing, unreadable or not in OpenAI's format."""


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """OpenAI/GPT-2 byte -> printable unicode map; its value order defines the first 256 ids."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codepoints = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codepoints.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codepoints)))


def read_bpe_merges(bpe_path: Path) -> list[tuple[str, str]]:
    """Merge pairs of an OpenAI BPE file (gzip or plain text), header skipped, capped like CLIP."""
    path = Path(bpe_path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BpeFileError(f"cannot read BPE vocabulary {path}: {exc.strerror or exc}") from exc
    try:
        text = gzip.decompress(raw).decode("utf-8") if raw[:2] == b"\x1f\x8b" else raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise BpeFileError(f"BPE vocabulary {path} is not a valid gzip/UTF-8 file: {exc}") from exc

    lines = text.split("\n")[1 : MAX_MERGES + 1]
    merges: list[tuple[str, str]] = []
    for number, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise BpeFileError(f"BPE vocabulary {path} line {number} is not a merge pair: {line[:60]!r}")
        merges.append((parts[0], parts[1]))
    if not merges:
        raise BpeFileError(f"BPE vocabulary {path} holds no merges")
    return merges


def clip_vocab_from_merges(merges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """The vocabulary exactly as OpenAI's SimpleTokenizer builds it (token -> id)."""
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + END_OF_WORD for s in symbols]
    tokens.extend(a + b for a, b in merges)
    tokens.extend([BOS_TOKEN, EOS_TOKEN])
    # dict(zip(...)) like OpenAI: a repeated token (malformed file) keeps its last id.
    return dict(zip(tokens, range(len(tokens))))


def build_clip_tokenizer(bpe_path: Path, *, model_max_length: int = 77) -> CLIPTokenizer:
    """A fast ``CLIPTokenizer`` whose ids match OpenAI's tokenizer for ``bpe_path``.

    Raises ``BpeFileError`` when the file cannot be used.
    """
    from transformers import CLIPTokenizer

    merges = read_bpe_merges(bpe_path)
    vocab = clip_vocab_from_merges(merges)
    for a, b in merges:
        # tokenizers' BPE rejects merges whose halves are not in the vocabulary.
        if a not in vocab or b not in vocab:
            raise BpeFileError(f"BPE vocabulary {bpe_path}: merge {a!r} {b!r} uses an unknown symbol")
    return CLIPTokenizer(
        vocab=vocab,
        merges=list(merges),  # type: ignore[arg-type]  # tokenizers' BPE takes (a, b) pairs; annotated as str only
        model_max_length=model_max_length,
    )


def _bpe_segment(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """OpenAI's greedy lowest-rank-first BPE on one pre-tokenized word."""
    symbols = [*word[:-1], word[-1] + END_OF_WORD]
    while len(symbols) > 1:
        pairs = [(ranks.get(p, 1 << 30), i) for i, p in enumerate(itertools.pairwise(symbols))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
    return symbols


def small_bpe_merges(words: Iterable[str] = SMALL_VOCAB_WORDS) -> list[tuple[str, str]]:
    """Merges that make every word in ``words`` a single token (lowercase ASCII words)."""
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        if not word.isascii() or not word.isalpha() or word != word.lower():
            raise ValueError(f"small BPE words must be lowercase ASCII letters: {word!r}")
        # Appending a merge never changes words already reduced to one token, and each step
        # shortens this word by at least one symbol, so the loop ends with a single token.
        while len(segments := _bpe_segment(word, ranks)) > 1:
            pair = (segments[0], segments[1])
            ranks[pair] = len(merges)
            merges.append(pair)
    return merges


def write_small_bpe_file(path: Path, words: Iterable[str] = SMALL_VOCAB_WORDS) -> Path:
    """Write a small gzip BPE file in OpenAI's format (header + one merge per line).

    Every word in ``words`` (by default common object names such as dog, cat, person, bus) is a
    single token, so text prompts tokenize into meaningful ids in tests and the tiny model.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join([BPE_HEADER, *(f"{a} {b}" for a, b in small_bpe_merges(words))]) + "\n"
    # mtime=0 keeps the file byte-identical between runs.
    path.write_bytes(gzip.compress(body.encode("utf-8"), mtime=0))
    return path


def bpe_vocab_size(bpe_path: Path) -> int:
    """Number of token ids (highest id + 1) the tokenizer built from ``bpe_path`` uses."""
    return max(clip_vocab_from_merges(read_bpe_merges(bpe_path)).values()) + 1
