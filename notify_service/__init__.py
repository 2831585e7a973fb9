"""notify_service: per-user notifications, broadcasts and read state (PROTOCOL.md section 5).

A NATS micro service (``notify.send``, ``notify.broadcast``, ``notify.list``, ``notify.read``)
plus durable JetStream consumers on the ``EVENTS`` stream (welcome notifications, @mentions).
Notifications live in the ``NOTIFICATIONS`` stream, read state in the ``natter_notify_read`` KV
bucket (docs/subjects.md).
"""
