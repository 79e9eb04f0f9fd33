"""Webhooks (SPEC §14): agents' endpoints, Standard Webhooks signatures, durable delivery
with retries, from the event feed."""

from daemon.webhooks.dispatch import Dispatcher
from daemon.webhooks.endpoints import Endpoints, WebhookRefused
from daemon.webhooks.outcomes import release_webhook_leases
from daemon.webhooks.records import WebhookSettings

__all__ = [
    "Dispatcher",
    "Endpoints",
    "WebhookRefused",
    "WebhookSettings",
    "release_webhook_leases",
]
