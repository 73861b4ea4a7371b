"""The ExternalSecretRef sync engine's parts (the engine itself: paved.handlers._secretsync)."""
