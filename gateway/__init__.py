"""The natter gateway: WebSocket and HTTP edge, relaying to the services over NATS."""
