"""Publishing run events to EventBridge, best effort: a run's end is recorded before it is announced."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from sundial.adapters.aws_retry import Backoff
from sundial.contracts.events import INVOCATION_FINISHED, RUN_EVENTS_SOURCE, InvocationFinished

logger = logging.getLogger(__name__)


class RunEvents:
    """Sends "Sundial Invocation Finished" to `bus`, retrying throttling; with no bus, logs it instead.

    A failure to publish is logged and swallowed: the invocation is already final in the table,
    which stays the record of truth (and can be listed), so an unsent event never fails a run.
    """

    def __init__(self, bus: str, client: Callable[[], Any]) -> None:
        self._bus = bus
        self._client = client

    def finished(self, detail: InvocationFinished) -> None:
        if not self._bus:
            logger.info("run finished: %s", detail.to_json())
            return
        entry = {
            "Source": RUN_EVENTS_SOURCE,
            "DetailType": INVOCATION_FINISHED,
            "Detail": detail.to_json(),
            "EventBusName": self._bus,
        }
        try:
            answer = Backoff(attempts=4).call(lambda: self._client().put_events(Entries=[entry]))
        except (ClientError, BotoCoreError):
            logger.exception("could not publish the end of invocation %s", detail.invocation_id)
            return
        if answer.get("FailedEntryCount"):
            logger.error("EventBridge refused the end of invocation %s: %s", detail.invocation_id, answer["Entries"])
