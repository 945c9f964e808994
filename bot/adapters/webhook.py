"""Webhook mode: an aiohttp server that Telegram posts updates to.

Requests without Telegram's secret token are refused with 403 before anything is
read further or queued; the comparison takes the same time however much of the
token is right. An update is answered 200 only once it has been handled, so if
the process dies mid-turn Telegram delivers it again, and the engine's record of
handled update ids makes that second delivery a no-op.

The same port serves `/healthz` (200 only while the database answers) and `/metrics`
(Haven's Prometheus metrics, see bot.metrics: counts and timings, nothing about anyone;
with `HAVEN_METRICS_TOKEN` set, only for requests bearing that token).
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any
from urllib.parse import urlparse

from aiohttp import web
from telegram import Update
from telegram.ext import Application

from bot import metrics
from bot.adapters.telegram import ALLOWED_UPDATES
from bot.engine import Engine
from bot.settings import Settings

log = logging.getLogger(__name__)
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def build_webhook_app(
    settings: Settings, application: Application[Any, Any, Any, Any, Any, Any], engine: Engine
) -> web.Application:
    assert settings.webhook_url and settings.webhook_secret
    secret = settings.webhook_secret.encode()
    path = urlparse(settings.webhook_url).path or "/"

    async def receive(request: web.Request) -> web.Response:
        offered = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(offered, secret):
            return web.Response(status=403)
        try:
            data = json.loads(await request.read())
            update = Update.de_json(data, application.bot)
        except (ValueError, TypeError, KeyError):
            log.warning("a webhook request held no valid update")
            return web.Response(status=400)
        if update is None:
            return web.Response(status=400)
        await application.update_processor.process_update(
            update, application.process_update(update)
        )
        return web.Response(status=200)

    async def health(_request: web.Request) -> web.Response:
        ready = await engine.repository.ping()
        return web.json_response({"database": "ok" if ready else "unavailable"},
                                 status=200 if ready else 503)

    metrics_auth = (f"Bearer {settings.haven_metrics_token}".encode()
                    if settings.haven_metrics_token else None)

    async def metrics_page(request: web.Request) -> web.Response:
        if metrics_auth is not None and not hmac.compare_digest(
                request.headers.get("Authorization", "").encode(), metrics_auth):
            return web.Response(status=401, headers={"WWW-Authenticate": "Bearer"})
        return web.Response(body=metrics.exposition(),
                            headers={"Content-Type": metrics.CONTENT_TYPE})

    async def on_startup(_app: web.Application) -> None:
        await application.initialize()
        if application.post_init is not None:  # run_polling would call it; so do we
            await application.post_init(application)
        await application.start()
        await application.bot.set_webhook(
            settings.webhook_url or "", secret_token=settings.webhook_secret,
            allowed_updates=ALLOWED_UPDATES, max_connections=settings.webhook_max_connections,
        )
        log.info("Haven is listening for Telegram's webhook on port %s", settings.port)

    async def on_cleanup(_app: web.Application) -> None:
        if application.post_stop is not None:
            await application.post_stop(application)
        await application.stop()
        await application.shutdown()
        if application.post_shutdown is not None:
            await application.post_shutdown(application)

    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post(path, receive)
    app.router.add_get("/healthz", health)
    app.router.add_get("/metrics", metrics_page)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
