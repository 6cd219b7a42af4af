"""Label Studio's brush RLE (its ``BrushLabels`` ``value.rle``), encoded from a binary mask.

The format is label-studio-sdk's (``label_studio_sdk.converter.brush.mask2rle``, after thi.ng's
rle-pack): the mask as RGBA bytes (each pixel's 0/255 repeated over 4 channels), a 32-bit value
count, a 5-bit word size less one, four 4-bit run-length field sizes less one (3, 4, 8, 16), then
per run either ``0 00 000 <byte>`` (a single value) or ``1 <size index> <length - 1> <byte>``.
The SDK is not a dependency (it pins OpenCV below our lock's version and brings pandas and nltk);
tests decode our output with the SDK's own decoder, in Label Studio's environment, and compare.
This encoder writes the same bytes as ``mask2rle`` (runs are split the same way).
"""

from __future__ import annotations

import numpy as np

CHANNELS = 4
WORD_BITS = 8
RUN_FIELDS = ((8, "00", 3), (16, "01", 4), (256, "10", 8))  # longest run, size index, length bits
LONG_RUN = 2**16
HEADER_FIELD_SIZES = "".join(f"{size - 1:04b}" for size in (3, 4, 8, 16))


def _run_bits(length: int, value: int) -> str:
    byte = f"{value:08b}"
    if length == 1:
        return "0" + "00" + "000" + byte
    for longest, index, bits in RUN_FIELDS:
        if length <= longest:
            return "1" + index + f"{length - 1:0{bits}b}" + byte
    pieces = []
    while length > LONG_RUN:
        pieces.append("1" + "11" + f"{LONG_RUN - 1:016b}" + byte)
        length -= LONG_RUN
    pieces.append("1" + "11" + f"{length - 1:016b}" + byte)
    return "".join(pieces)


def mask_to_rle(mask: np.ndarray) -> list[int]:
    """Label Studio brush RLE bytes for a 2-D mask (non-zero: inside)."""
    values = np.where(mask.reshape(-1) != 0, 255, 0).astype(np.uint8)
    total = values.size * CHANNELS
    # Runs over pixels; each pixel is CHANNELS equal bytes, so a run is CHANNELS times as long.
    boundaries = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate(([0], boundaries)) if values.size else np.array([], dtype=np.int64)
    lengths = np.diff(np.concatenate((starts, [values.size]))) * CHANNELS
    bits = [f"{total:032b}", f"{WORD_BITS - 1:05b}", HEADER_FIELD_SIZES]
    bits += [_run_bits(int(length), int(values[start])) for start, length in zip(starts, lengths, strict=True)]
    stream = "".join(bits)
    stream += "0" * (8 - len(stream) % 8)  # as the SDK: always pads, a whole zero byte when aligned
    return [int(stream[i : i + 8], 2) for i in range(0, len(stream), 8)]
