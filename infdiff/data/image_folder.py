"""A directory tree of image files (FFHQ, CelebA-HQ, any folder of PNG/JPEG/WebP/... images)."""

from __future__ import annotations

import os

from infdiff.data.encoded_images import EncodedImageDataset
from infdiff.data.errors import DataError
from infdiff.data.files import IMAGE_EXTENSIONS, list_images, require_path
from infdiff.io import PathLike

EXPECTED = "a directory of images (searched recursively)"


class ImageFolderDataset(EncodedImageDataset):
    """Every image file below ``root`` in sorted relative-path order, as ``(C, size, size)`` in ``[-1, 1]``.

    Images are resized (shorter side to ``size``, antialiased bicubic) and centre-cropped.  ``key`` is the config key
    ``root`` came from, quoted in errors.  Unreadable files are skipped with a warning (see
    :class:`~infdiff.data.encoded_images.EncodedImageDataset`).
    """

    def __init__(self, root: PathLike, size: int, channels: int = 3, key: str = "data.root_dir"):
        resolved = require_path(root, key, EXPECTED)
        super().__init__(size, channels, location=os.fspath(root), key=key)
        self.root = resolved
        self.files = list_images(resolved)
        if not self.files:
            extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise DataError(
                f"{key}={os.fspath(root)!r} contains no image files (looked recursively for {extensions}); "
                f"expected {EXPECTED}"
            )

    def __len__(self) -> int:
        return len(self.files)

    def encoded(self, index: int) -> str:
        return os.path.join(self.root, self.files[index])

    def describe(self, index: int) -> str:
        return self.encoded(index)
