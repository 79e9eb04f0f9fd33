"""After the front: the spool made durable as raw object + row (then 250), and extraction.

`Ingest` keeps the 250 rule; `Pipeline` runs extraction jobs, claimed by lease, in the worker
processes of `ExtractionPool`, until each message is terminal.
"""

from daemon.pipeline.content_pool import ContentPool, ContentSettings
from daemon.pipeline.ingest import LOCAL, Delivery, Ingest
from daemon.pipeline.jobs import Pipeline, PipelineSettings
from daemon.pipeline.leases import release_all_leases
from daemon.pipeline.pool import ExtractionPool

__all__ = [
    "LOCAL",
    "ContentPool",
    "ContentSettings",
    "Delivery",
    "ExtractionPool",
    "Ingest",
    "Pipeline",
    "PipelineSettings",
    "release_all_leases",
]
