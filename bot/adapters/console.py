"""Chat with Haven in a terminal: the same engine, flows and database as on Telegram."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TextIO

from bot.adapters.plain_text import html_to_text
from bot.engine import Engine
from bot.messages import Button, Document, Incoming, InputKind, Reply, text
from bot.scheduler import Scheduler, SchedulerConfig

QUIT_WORDS = frozenset({"/quit", "/exit"})


class ConsoleChat:
    """Prints Haven's messages, numbers the buttons, and turns a typed number into a press."""

    def __init__(self, engine: Engine, user_id: int, out: TextIO = sys.stdout,
                 first_name: str = "", language_code: str | None = None,
                 export_dir: Path | None = None) -> None:
        self.engine = engine
        self.export_dir = export_dir
        self.user_id = user_id
        self.out = out
        self.first_name = first_name
        self.language_code = language_code
        self.buttons: list[Button] = []

    async def send(self, typed: str) -> Reply:
        """Handle one line the person typed and show the reply."""
        incoming = self._incoming(typed.strip())
        reply = await self.engine.handle(incoming)
        self.show(reply)
        return reply

    def _incoming(self, typed: str) -> Incoming:
        if typed.isdigit() and self.buttons and 1 <= int(typed) <= len(self.buttons):
            return Incoming(chat_id=self.user_id, kind=InputKind.PRESS,
                            text=self.buttons[int(typed) - 1].data, first_name=self.first_name,
                            language_code=self.language_code)
        return text(self.user_id, typed, first_name=self.first_name,
                    language_code=self.language_code)

    def show(self, reply: Reply) -> None:
        for message in reply.messages:
            for document in message.documents:
                self.out.write(f"\n[file] {self._save(document)}\n")
            shown = html_to_text(message.text).replace("\n", "\n       ")
            if shown:
                self.out.write(f"\nHaven: {shown}\n")
            if message.buttons:
                self.buttons = [button for row in message.buttons for button in row]
                for number, button in enumerate(self.buttons, start=1):
                    self.out.write(f"   {number}) {button.label}\n")
        if reply.messages and not any(message.buttons for message in reply.messages):
            self.buttons = []
        self.out.flush()


    def _save(self, document: Document) -> str:
        """Write an exported file to the export folder; returns where it went."""
        if self.export_dir is None:
            return f"{document.file_name} ({len(document.content)} bytes, not saved)"
        self.export_dir.mkdir(parents=True, exist_ok=True)
        path = self.export_dir / document.file_name
        path.write_bytes(document.content)
        path.chmod(0o600)
        return str(path)


async def run_console(engine: Engine, user_id: int, first_name: str = "",
                      export_dir: Path | None = None,
                      config: SchedulerConfig | None = None) -> None:
    out = sys.stdout
    out.write("Haven in your terminal. Type your answers; type a number to pick an option; "
              "/help for crisis lines, /quit to leave.\n")
    chat = ConsoleChat(engine, user_id, out, first_name=first_name, export_dir=export_dir)
    await chat.send("/start")

    async def show_prompt(chat_id: int, reply: Reply) -> bool:
        if chat_id != user_id:
            return False  # someone else's prompt, from a shared database: not for this terminal
        chat.show(reply)
        out.write("\nYou: ")
        out.flush()
        return True

    background = asyncio.create_task(Scheduler(engine, show_prompt, config).run_forever())
    loop = asyncio.get_running_loop()
    while True:
        out.write("\nYou: ")
        out.flush()
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip().lower() in QUIT_WORDS:
            background.cancel()
            out.write("\nTake care. Your progress is saved; come back any time.\n")
            return
        await chat.send(line.rstrip("\n"))
