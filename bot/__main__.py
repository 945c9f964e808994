"""`python -m bot`: run Haven on Telegram, or chat with it in the terminal."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys

from bot.settings import Settings, SettingsError, load_settings

NO_TOKEN = """\
Haven needs a Telegram bot token to run on Telegram.

  1. In Telegram, open a chat with @BotFather and send /newbot.
  2. Choose a name and a username; BotFather replies with a token like 123456789:AA...
  3. Put it in the environment (or in a .env file here):
       export TELEGRAM_BOT_TOKEN=123456789:AA...
  4. Run `python -m bot` again.

To try Haven without a token, chat with it in this terminal:
  python -m bot console      (or: make console)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description="Haven")
    parser.add_argument("mode", nargs="?", default="auto",
                        choices=["auto", "polling", "webhook", "console", "check", "migrate",
                                 "rotate-keys"],
                        help="auto (default): webhook if WEBHOOK_URL is set, else long polling")
    args = parser.parse_args(argv)
    # Start-up builds much that lives as long as the process (flows, templates, compiled
    # rules); garbage collection during it only costs time (about 0.4 s). It resumes once
    # the bot is built (`bot.app.built`).
    gc.disable()
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"Haven cannot start; please fix these settings:\n{error}", file=sys.stderr)
        return 2
    from bot.logs import configure_logging

    configure_logging(settings.haven_log_level, settings.telegram_bot_token)
    if args.mode == "check":
        return _check(settings)
    if args.mode == "migrate":
        return asyncio.run(_migrate(settings))
    if args.mode == "rotate-keys":
        from bot.storage.rotation import rotate_keys

        print(asyncio.run(rotate_keys(settings)))
        return 0
    if args.mode == "console":
        return asyncio.run(_console(settings))
    if not settings.telegram_bot_token:
        print(NO_TOKEN, file=sys.stderr)
        return 2
    from bot.adapters.telegram import run_telegram

    mode = args.mode
    if mode == "auto":
        mode = "webhook" if settings.webhook_url else "polling"
    return run_telegram(settings, webhook=mode == "webhook")


def _check(settings: Settings) -> int:
    from bot.app import load_content
    from bot.flows.loader import FlowError

    try:
        content = load_content(settings.haven_dialogs_dir, settings.haven_prompts_dir,
                               settings.haven_default_locale)
    except FlowError as error:
        print(f"The flows have problems:\n{error}", file=sys.stderr)
        return 1
    steps = sum(len(flow.steps) for flow in content.flows.values())
    print(f"{len(content.flows)} flows, {steps} steps: all valid.")
    return 0


async def _migrate(settings: Settings) -> int:
    from bot.app import open_settings_repository

    repository = await open_settings_repository(settings)
    await repository.close()
    print("The database is up to date.")
    return 0


async def _console(settings: Settings) -> int:
    from bot.adapters.console import run_console
    from bot.app import build_engine, built
    from bot.scheduler import scheduler_config

    engine = await build_engine(settings)
    built()
    try:
        await run_console(engine, settings.haven_console_user_id,
                          export_dir=settings.haven_data_dir / "exports",
                          config=scheduler_config(settings))
    finally:
        await engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
