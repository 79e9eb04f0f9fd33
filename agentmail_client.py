"""Seed 000's import name for postroom's Python client (SPEC §17):

    from agentmail_client import Client, OutboundAttachment, AgentMailError

The same objects as `daemon.client`; `AgentMailError` is `PostroomError` under the seed's name.
"""

from daemon.client import AgentMailError, Client, OutboundAttachment, PostroomError

__all__ = ["AgentMailError", "Client", "OutboundAttachment", "PostroomError"]
