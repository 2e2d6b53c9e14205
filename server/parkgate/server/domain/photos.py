"""Member photos (S15): whatever image a window sends, kept as one small JPEG.

Pillow decodes it (so a file that is not an image is refused with a reason,
not stored), bounds its pixel count before decoding (a decompression bomb
is refused), and the result is a JPEG no larger than a gate display needs.
"""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from .errors import InvalidArgument, Reason

#: Bytes a window may send: a phone camera's JPEG fits, a raw scan does not (and gRPC's 4 MiB message limit is far).
MAX_PHOTO_BYTES = 2 * 1024 * 1024
#: Pixels Pillow may decode (a 24-megapixel camera fits; a crafted 100k x 100k image does not).
MAX_PIXELS = 40_000_000
#: The stored photo's longest side: enough for a checker's screen.
STORED_SIDE = 480


def store_photo(data: bytes) -> bytes:
    """The photo as stored: a JPEG at most STORED_SIDE pixels on its longest side."""
    if len(data) > MAX_PHOTO_BYTES:
        raise InvalidArgument(f"the photo is {len(data)} bytes; at most {MAX_PHOTO_BYTES} are accepted",
                              Reason.PHOTO_TOO_LARGE)
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            if width * height > MAX_PIXELS:
                raise InvalidArgument(f"the photo is {width}x{height} pixels; at most {MAX_PIXELS} are accepted",
                                      Reason.PHOTO_TOO_LARGE)
            probe.load()
            image = probe.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidArgument(f"the photo is not an image Pillow can read ({exc.__class__.__name__})",
                              Reason.PHOTO_NOT_AN_IMAGE) from None
    image.thumbnail((STORED_SIDE, STORED_SIDE))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()
