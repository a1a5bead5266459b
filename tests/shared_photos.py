"""Where the real photos for tests live: $SCENIMEFY_TEST_PHOTOS, else ../shared/data/photos beside
the checkout, else /work/shared/data/photos (a clone made elsewhere still finds them)."""

import os
from pathlib import Path


def _find() -> Path:
    candidates = [
        os.environ.get("SCENIMEFY_TEST_PHOTOS", ""),
        Path(__file__).resolve().parents[1].parent / "shared" / "data" / "photos",
        "/work/shared/data/photos",
    ]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return Path(candidates[1])


PHOTOS = _find()
