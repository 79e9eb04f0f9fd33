"""The API's routers, one per resource, each a module-level `router` that `create_app` includes;
routes get the agent and the app's context from `daemon.api.deps`, never from a closure."""
