"""Client-side clipping for client-level DP, as a ClientApp mod (light: Flower only)."""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM


def client_clipping_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's ``fixedclipping_mod`` when the server asks for client-side clipping, else a no-op.

    Register it on the ClientApp's train function; it acts only on messages whose config
    carries Flower's clipping-norm key (sent by ``DifferentialPrivacyClientSideFixedClipping``).
    """
    asked = any(KEY_CLIPPING_NORM in record for record in msg.content.config_records.values())
    if not asked:
        return call_next(msg, context)
    return fixedclipping_mod(msg, context, call_next)
