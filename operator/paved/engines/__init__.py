"""Engines: the long-running workers behind the handlers (compose, secret sync), each with an
explicit start/stop."""
