"""Webhooks (SPEC §14): agents' endpoints, Standard Webhooks signatures, durable delivery
with retries, from the event feed."""

from daemon.webhooks.dispatch import Dispatcher
from daemon.webhooks.endpoints import Endpoints, WebhookRefused
from daemon.webhooks.outcomes import release_webhook_leases
from daemon.webhooks.records import RETRIES, WebhookSettings
from daemon.webhooks.signing import signature

__all__ = [
    "RETRIES",
    "Dispatcher",
    "Endpoints",
    "WebhookRefused",
    "WebhookSettings",
    "release_webhook_leases",
    "signature",
]
