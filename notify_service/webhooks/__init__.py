"""Webhooks: registrations, SSRF-safe targets, fan-out and signed deliveries (PROTOCOL.md section 12)."""
