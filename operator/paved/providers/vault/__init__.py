"""Vault / OpenBao providers (hvac). `store` is the KV v2 secret store provider (`vault`)."""
