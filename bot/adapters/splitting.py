"""Split Telegram HTML into messages within Telegram's 4,096-character limit.

Cuts fall between paragraphs where possible, then between lines, then between
words; tags open at a cut are closed before it and reopened after it, so every
part is valid HTML on its own.
"""

from __future__ import annotations

import html
import re

TELEGRAM_LIMIT = 4096
_TOKEN = re.compile(r"(<[^>]*>)")
_TAG_NAME = re.compile(r"^</?\s*([a-zA-Z0-9-]+)")


def visible_length(text: str) -> int:
    """Length as Telegram counts it: the text without tags, in UTF-16 code units."""
    plain = html.unescape(_TOKEN.sub("", text))
    return len(plain.encode("utf-16-le")) // 2


def fits(text: str, limit: int = TELEGRAM_LIMIT) -> bool:
    """Whether Telegram takes `text` as one message.

    Told at once for all but very long texts: a character is at most two UTF-16 units,
    and dropping tags or spelling out entities never makes a text longer.
    """
    return len(text) * 2 <= limit or visible_length(text) <= limit


def split_html(text: str, limit: int = TELEGRAM_LIMIT) -> list[str]:
    if fits(text, limit):
        return [text]
    parts: list[str] = []
    current: list[str] = []
    size = 0
    open_tags: list[tuple[str, str]] = []  # (name, full opening tag)
    for piece in _pieces(text):
        if piece.startswith("<"):
            _track(piece, open_tags)
            current.append(piece)
            continue
        length = visible_length(piece)
        if size + length > limit and size > 0:
            parts.append(_close(current, open_tags))
            current = [tag for _, tag in open_tags]
            size = 0
            piece = piece.lstrip()
            length = visible_length(piece)
        current.append(piece)
        size += length
    if size:
        parts.append(_close(current, open_tags))
    return [part for part in (p.strip() for p in parts) if part]


def _pieces(text: str) -> list[str]:
    """Tags, and text in chunks small enough to place: paragraphs, lines, then words."""
    pieces: list[str] = []
    for token in _TOKEN.split(text):
        if not token:
            continue
        if token.startswith("<"):
            pieces.append(token)
            continue
        for chunk in re.split(r"(?<=\n\n)|(?<=\n)(?=[^\n])", token):
            if visible_length(chunk) <= 200:
                pieces.append(chunk)
            else:
                pieces.extend(_words(chunk))
    return pieces


def _words(chunk: str) -> list[str]:
    words: list[str] = []
    for word in re.split(r"(?<=\s)", chunk):
        while visible_length(word) > 200:  # one enormous "word": cut it, keeping entities whole
            cut = _safe_cut(word, 200)
            words.append(word[:cut])
            word = word[cut:]
        if word:
            words.append(word)
    return words


def _safe_cut(word: str, length: int) -> int:
    amp = word.rfind("&", 0, length)
    if amp != -1 and ";" not in word[amp:length]:
        return amp or length
    return length


def _track(tag: str, open_tags: list[tuple[str, str]]) -> None:
    match = _TAG_NAME.match(tag)
    if match is None:
        return
    name = match[1].lower()
    if tag.startswith("</"):
        for index in range(len(open_tags) - 1, -1, -1):
            if open_tags[index][0] == name:
                del open_tags[index]
                break
    elif not tag.endswith("/>"):
        open_tags.append((name, tag))


def _close(current: list[str], open_tags: list[tuple[str, str]]) -> str:
    closing = "".join(f"</{name}>" for name, _ in reversed(open_tags))
    return "".join(current) + closing
