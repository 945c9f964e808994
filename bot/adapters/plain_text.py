"""Telegram HTML to plain terminal text."""

from __future__ import annotations

from html.parser import HTMLParser


class _Flattener(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.quote_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "blockquote":
            self.quote_depth += 1
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "blockquote":
            self.quote_depth -= 1
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.quote_depth:
            data = "\n".join(f"  │ {line}" if line.strip() else line for line in data.split("\n"))
        self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _Flattener()
    parser.feed(html)
    parser.close()
    lines = "".join(parser.parts).split("\n")
    text = "\n".join(line.rstrip() for line in lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip()
