"""A recovery-test job: a keyed join of two event-log topics, each read by its own source.

Topic ``orders`` holds ``{"order": id, "user": name}``, topic ``payments``
``{"order": id, "amount": n}`` (an order may have none, one or several
payments; a payment may come before its order). The two sources are united,
keyed by order id, and a KeyedProcessFunction keeps the order and the
payments that came first in keyed state, emitting ``[order, user, amount]``
once per payment as soon as both sides are there (an unbounded inner join).
Output: topic ``paid`` of ``WF_LOG_DIR``, exactly once.
"""

import json
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from weirflow import Dataflow, KeyedProcessFunction, WatermarkStrategy
from weirflow.connectors import EventLogSink, EventLogSource
from weirflow.state import ListStateDescriptor, ValueStateDescriptor

LOG_DIR = os.environ["WF_LOG_DIR"]


class OrderPayments(KeyedProcessFunction[Any, Any]):
    """Joins an order (``"user"`` field) with its payments (``"amount"`` field)."""

    def open(self, ctx: Any) -> None:
        """Declare the order's user and the payments waiting for the order."""
        self.user = ctx.get_state(ValueStateDescriptor("user"))
        self.waiting = ctx.get_state(ListStateDescriptor("waiting"))

    def process_element(self, value: dict[str, Any], ctx: Any) -> Iterator[list[Any]]:
        """Join one order or payment with the other side seen so far."""
        order = value["order"]
        if "user" in value:
            self.user.update(value["user"])
            for amount in self.waiting.get():
                yield [order, value["user"], amount]
            self.waiting.clear()
            return
        user = self.user.value()
        if user is None:
            self.waiting.add(value["amount"])
        else:
            yield [order, user, value["amount"]]


def _source(topic: str) -> EventLogSource:
    return EventLogSource(LOG_DIR, topic, decode=json.loads, group="order_payments")


flow = Dataflow("order_payments")
watermarks = WatermarkStrategy.bounded_out_of_orderness(timedelta(seconds=1))
orders = flow.source(_source("orders"), watermarks=watermarks, name="orders")
payments = flow.source(_source("payments"), watermarks=watermarks, name="payments")
(
    orders.union(payments, name="orders_and_payments")
    .key_by(lambda e: e["order"])
    .process(OrderPayments(), name="join")
    .sink(EventLogSink(LOG_DIR, "paid"), name="paid")
)
