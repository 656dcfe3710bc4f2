"""A trivial deterministic tokenizer: prompts are UTF-8 bytes, other ids are made-up syllables.

Ids 0..2 are pad/bos/eos, 3..258 the 256 byte values, and every id above that decodes to a
fixed pseudo-word, so a random model's output is readable text of the right length.
"""

from __future__ import annotations

PAD, BOS, EOS = 0, 1, 2
_BYTE0 = 3
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


class ByteTokenizer:
    def __init__(self, vocab: int):
        if vocab < _BYTE0 + 256 + 1:
            raise ValueError(f"vocab must be at least {_BYTE0 + 257}, got {vocab}")
        self.vocab = vocab
        self.eos = EOS
        self.bos = BOS

    def encode(self, text: str) -> list[int]:
        return [BOS] + [_BYTE0 + b for b in text.encode("utf-8")]

    def decode_token(self, token: int) -> str:
        if token < _BYTE0:
            return ""
        if token < _BYTE0 + 256:
            return bytes([token - _BYTE0]).decode("utf-8", errors="replace")
        return " " + _word(token - _BYTE0 - 256)

    def decode(self, tokens: list[int]) -> str:
        """Runs of byte tokens are decoded together, so multi-byte UTF-8 characters survive."""
        out: list[str] = []
        run = bytearray()
        for t in tokens:
            if _BYTE0 <= t < _BYTE0 + 256:
                run.append(t - _BYTE0)
                continue
            out.append(run.decode("utf-8", errors="replace"))
            run.clear()
            out.append(self.decode_token(t))
        out.append(run.decode("utf-8", errors="replace"))
        return "".join(out)


def _word(n: int) -> str:
    c, v = len(_CONSONANTS), len(_VOWELS)
    syllables = []
    for _ in range(1 + n % 3):
        syllables.append(_CONSONANTS[n % c] + _VOWELS[(n // c) % v])
        n = n // (c * v) + 7 * len(syllables)
    return "".join(syllables)
