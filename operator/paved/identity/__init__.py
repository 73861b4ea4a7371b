"""Pure core of AgentIdentity: scope subsets, narrowing, delegation chains, expiry, grants.

No I/O and no kopf/kubernetes/hvac/boto3 imports: the handler (paved.handlers.identity)
feeds it plain dicts (specs as dumped by the api models, summaries of other identities from
Kopf's index) and turns its decisions into provider calls and status. `grants` words what
is live (status.grants and the Granted/Revoked audit messages).
"""

from paved.identity.chain import (
    DEFAULT_MAX_DEPTH,
    Ancestor,
    Decision,
    DelegationError,
    ancestry_digest,
    decide,
    own_expiry,
)
from paved.identity.scope import Excess, excess, narrow, scope_lines

__all__ = [
    "DEFAULT_MAX_DEPTH", "Ancestor", "Decision", "DelegationError", "Excess",
    "ancestry_digest", "decide", "excess", "narrow", "own_expiry", "scope_lines",
]
