"""Test helpers shared by the unit and e2e tests and by bench/ (importable as `support`)."""
