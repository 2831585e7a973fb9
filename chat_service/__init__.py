"""natter's chat service: rooms, membership, messages (per-room contiguous ``seq``), history,
recovery and presence, as a NATS micro service (``chat.*`` endpoints, docs/subjects.md)."""
