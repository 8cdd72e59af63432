"""ASGI entry point: Django for HTTP, Channels for websockets (session-authenticated)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Django must be set up before anything imports models (consumers do).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from config.limits import BodySizeLimitMiddleware, limit_daphne_bodies  # noqa: E402
from config.routing import websocket_urlpatterns  # noqa: E402

# Oversized request bodies are refused before anything reads them (see config/limits.py); daphne
# imports this module before it serves, so its request class learns the limit here too.
limit_daphne_bodies()

application = ProtocolTypeRouter(
    {
        "http": BodySizeLimitMiddleware(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
