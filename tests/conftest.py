"""Test wiring: every module in tests/fixtures/ is a pytest plugin.

Fixtures for the real parts (control plane, moto, OpenBao, Prometheus) each live in their
own module there, so adding a part never means editing this file.
"""

from pathlib import Path

pytest_plugins = sorted(
    f"fixtures.{path.stem}"
    for path in (Path(__file__).parent / "fixtures").glob("*.py")
    if not path.stem.startswith("_")
)
