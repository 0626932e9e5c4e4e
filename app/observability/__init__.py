"""Observability: request metrics and logs, rolling summaries, alerts, state-change logging."""
