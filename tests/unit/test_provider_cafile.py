"""paved.providers.cafile: the private CA bundle file of the HTTP clients that take a path."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from paved.providers.cafile import CaFile

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_each_bundle_gets_its_own_private_file_removed_on_close() -> None:
    first, second = CaFile(PEM, prefix="paved-test-ca-"), CaFile(PEM, prefix="paved-test-ca-")
    assert first.path != second.path and Path(first.path).name.startswith("paved-test-ca-")
    assert Path(first.path).read_text() == PEM
    assert stat.S_IMODE(os.stat(first.path).st_mode) == 0o600
    first.close()
    first.close()  # closing twice is harmless
    assert not Path(first.path).exists() and Path(second.path).exists()
    second.close()
