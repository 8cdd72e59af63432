"""Copy trading's write path: leaders, subscriptions, detection and replication."""

from __future__ import annotations

from copytrading.services.detection import (
    enqueue_fanout,
    leader_fill_from_event,
    leader_fill_record,
    leader_poll,
)
from copytrading.services.fanout import copy_fanout_batch as copy_fanout
from copytrading.services.leaders import (
    leader_pause,
    leader_publish,
    leader_resume,
    leader_retire,
    leader_stop_set,
)
from copytrading.services.replication import (
    CopyOrderPending,
    copy_order_resolve,
    copy_order_submit,
    copy_orders_sweep,
    copy_plan,
    copy_replicate,
)
from copytrading.services.subscriptions import (
    subscription_create,
    subscription_pause,
    subscription_resume,
    subscription_stop,
    subscription_update,
    subscriptions_pause_for_halt,
)

__all__ = [
    "CopyOrderPending",
    "copy_fanout",
    "copy_order_resolve",
    "copy_order_submit",
    "copy_orders_sweep",
    "copy_plan",
    "copy_replicate",
    "enqueue_fanout",
    "leader_fill_from_event",
    "leader_fill_record",
    "leader_pause",
    "leader_poll",
    "leader_publish",
    "leader_resume",
    "leader_retire",
    "leader_stop_set",
    "subscription_create",
    "subscription_pause",
    "subscription_resume",
    "subscription_stop",
    "subscription_update",
    "subscriptions_pause_for_halt",
]
