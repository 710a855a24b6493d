"""fedecg's ClientApp, whose site ``hospital-nan`` sends NaN in place of every parameter."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, Context, Message
from flwr.clientapp.typing import ClientAppCallable

from fedecg.app import build_client_app
from fedecg.federated import keys

POISONED_SITE = "hospital-nan"


def poison(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Replace the reply's parameters with NaN at the poisoned site."""
    reply = call_next(message, context)
    if context.node_config.get(keys.NODE_SITE_NAME) == POISONED_SITE and not reply.has_error():
        arrays = reply.content[keys.ARRAYS]
        for key in list(arrays):
            arrays[key] = Array(np.full(arrays[key].shape, np.nan, dtype=np.float32))
    return reply


app = build_client_app(extra_train_mods=[poison])
