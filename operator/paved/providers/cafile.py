"""A CA bundle on disk for the HTTP clients that only take a path (requests' `verify`, hvac).

The file's name is unpredictable and it is created exclusively, readable by this user only
(`tempfile.mkstemp`: O_EXCL, mode 0600), so no other local user can plant a CA of their own at
a path Paved would trust, nor swap its contents. It belongs to the provider that made it and is
removed when that provider closes.
"""

from __future__ import annotations

import os
import tempfile


class CaFile:
    """`path`: a private file holding `pem`, until `close()` removes it."""

    def __init__(self, pem: str, *, prefix: str) -> None:
        handle, path = tempfile.mkstemp(prefix=prefix, suffix=".pem")
        try:
            with os.fdopen(handle, "w") as file:
                file.write(pem)
        except BaseException:
            os.unlink(path)
            raise
        self.path = path
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                os.unlink(self.path)
            except OSError:
                pass
