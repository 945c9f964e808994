"""Small helpers for reading what a person would see."""

from __future__ import annotations

from bot.adapters.plain_text import html_to_text
from bot.messages import Reply


def texts(reply: Reply) -> str:
    """Everything in a reply as plain text, one message per paragraph."""
    return "\n\n".join(html_to_text(message.text) for message in reply.messages)


def labels(reply: Reply) -> list[str]:
    """The labels of the buttons under the reply's last message with buttons."""
    for message in reversed(reply.messages):
        if message.buttons:
            return [button.label for row in message.buttons for button in row]
    return []


def press_data(reply: Reply, label: str) -> str:
    for message in reversed(reply.messages):
        for row in message.buttons:
            for button in row:
                if button.label == label:
                    return button.data
    raise AssertionError(f"no button {label!r}; the reply has {labels(reply)}")
