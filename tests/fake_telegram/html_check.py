"""Telegram's HTML parse mode, re-implemented after tdlib's ``parse_html``.

``parse_html`` turns the markup into the visible text and its entities, or raises
``HtmlError`` whose message is the text Telegram puts after
"Bad Request: can't parse entities: ". The tag grammar, the accepted entities and the error
wording follow tdlib (td/telegram/MessageEntity.cpp), which the Bot API server uses.

One deliberate difference: tdlib keeps a bare ``&`` that starts no known entity as a literal
character, although the Bot API documentation says it must be escaped. With
``strict_ampersand=True`` (the default) the fake refuses it, so a bot that relies on the
lenient behaviour is caught.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ENTITY_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
    "a": "text_link",
}

SUPPORTED_TAGS = frozenset(ENTITY_TYPES)
NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
SPACES = " \t\r\n\v\f"
TRIMMED = " \t\r\n\v\f"


class HtmlError(ValueError):
    """The markup is not valid Telegram HTML; ``str(error)`` is tdlib's description."""


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit of Telegram entity offsets and text limits."""
    return len(text.encode("utf-16-le")) // 2


@dataclass
class _OpenTag:
    name: str
    argument: str
    utf16_offset: int


@dataclass
class _Parser:
    source: str
    strict_ampersand: bool
    pos: int = 0
    utf16: int = 0
    out: list[str] = field(default_factory=list)
    stack: list[_OpenTag] = field(default_factory=list)
    entities: list[dict] = field(default_factory=list)

    def byte_offset(self, pos: int) -> int:
        return len(self.source[:pos].encode("utf-8"))

    def char(self, pos: int) -> str:
        """The character at ``pos``, or "" past the end (tdlib reads a NUL there)."""
        return self.source[pos] if pos < len(self.source) else ""

    def is_space(self, pos: int) -> bool:
        c = self.char(pos)
        return c != "" and c in SPACES

    def skip_spaces(self, pos: int) -> int:
        while self.is_space(pos):
            pos += 1
        return pos

    def emit(self, text: str) -> None:
        self.out.append(text)
        self.utf16 += utf16_len(text)

    def run(self) -> tuple[str, list[dict]]:
        while self.pos < len(self.source):
            c = self.source[self.pos]
            if c == "&":
                self.ampersand()
            elif c == "<":
                if self.char(self.pos + 1) == "/":
                    self.end_tag()
                else:
                    self.start_tag()
            else:
                self.emit(c)
                self.pos += 1
        if self.stack:
            raise HtmlError(
                f'Can\'t find end tag corresponding to start tag "{self.stack[-1].name}"'
            )
        return "".join(self.out), self.entities

    def ampersand(self) -> None:
        decoded, end = decode_entity(self.source, self.pos)
        if decoded is None:
            if self.strict_ampersand:
                raise HtmlError(
                    f'Unescaped "&" at byte offset {self.byte_offset(self.pos)}; '
                    "use &amp; (fake Telegram is stricter than tdlib here)"
                )
            self.emit("&")
            self.pos += 1
            return
        self.emit(decoded)
        self.pos = end

    def start_tag(self) -> None:
        begin = self.pos
        i = begin + 1
        while not self.is_space(i) and self.char(i) != ">":
            if self.char(i) == "":
                raise HtmlError(f"Unclosed start tag at byte offset {self.byte_offset(begin)}")
            i += 1
        name = self.source[begin + 1 : i].lower()
        if name not in SUPPORTED_TAGS:
            raise HtmlError(
                f'Unsupported start tag "{name}" at byte offset {self.byte_offset(begin)}'
            )
        attributes, i = self.attributes(name, begin, i)
        argument = _tag_argument(name, attributes)
        if name == "span" and argument != "spoiler":
            raise HtmlError(
                f'Tag "span" must have class "tg-spoiler" at byte offset {self.byte_offset(begin)}'
            )
        self.stack.append(_OpenTag(name, argument, self.utf16))
        self.pos = i + 1

    def attributes(self, tag: str, begin: int, i: int) -> tuple[dict[str, str], int]:
        """Read ``name=value`` pairs up to the closing ``>``; returns them and its position."""
        found: dict[str, str] = {}
        while True:
            i = self.skip_spaces(i)
            if self.char(i) == ">":
                return found, i
            if self.char(i) == "":
                raise HtmlError(f"Unclosed start tag at byte offset {self.byte_offset(begin)}")
            start = i
            while self.char(i) not in ("", "=", ">") and not self.is_space(i):
                i += 1
            attr = self.source[start:i]
            if not attr:
                offset = self.byte_offset(begin)
                raise HtmlError(f'Empty attribute name in the tag "{tag}" at byte offset {offset}')
            i = self.skip_spaces(i)
            if self.char(i) != "=":
                if tag == "blockquote" and attr == "expandable":
                    found[attr] = ""
                    continue
                raise HtmlError(
                    f'Expected equal sign in declaration of an attribute of the tag "{tag}" '
                    f"at byte offset {self.byte_offset(begin)}"
                )
            value, i = self.attribute_value(tag, begin, i + 1)
            found[attr] = value

    def attribute_value(self, tag: str, begin: int, i: int) -> tuple[str, int]:
        i = self.skip_spaces(i)
        if self.char(i) == "":
            raise HtmlError(f'Unclosed start tag "{tag}" at byte offset {self.byte_offset(begin)}')
        quote = self.char(i)
        if quote not in "'\"":
            start = i
            while self.char(i).isalnum() or self.char(i) in (".", "-"):
                i += 1
            if not self.is_space(i) and self.char(i) != ">":
                raise HtmlError(
                    f"Unexpected end of name token at byte offset {self.byte_offset(i)}"
                )
            return self.source[start:i].lower(), i
        i += 1
        value: list[str] = []
        while self.char(i) not in ("", quote):
            if self.char(i) == "&":
                decoded, end = decode_entity(self.source, i)
                if decoded is not None:
                    value.append(decoded)
                    i = end
                    continue
            value.append(self.char(i))
            i += 1
        if self.char(i) == "":
            raise HtmlError(f"Unclosed start tag at byte offset {self.byte_offset(begin)}")
        return "".join(value), i + 1

    def end_tag(self) -> None:
        begin = self.pos
        if not self.stack:
            raise HtmlError(f"Unexpected end tag at byte offset {self.byte_offset(begin)}")
        i = begin + 2
        while self.char(i) not in ("", ">") and not self.is_space(i):
            i += 1
        name = self.source[begin + 2 : i]
        i = self.skip_spaces(i)
        if self.char(i) != ">":
            raise HtmlError(f"Unclosed end tag at byte offset {self.byte_offset(begin)}")
        opened = self.stack.pop()
        if name and name != opened.name:
            raise HtmlError(
                f"Unmatched end tag at byte offset {self.byte_offset(begin)}, "
                f'expected "</{opened.name}>", found "</{name}>"'
            )
        self.pos = i + 1
        self.close(opened)

    def close(self, opened: _OpenTag) -> None:
        length = self.utf16 - opened.utf16_offset
        if length == 0:
            return
        entity = {
            "type": ENTITY_TYPES[opened.name],
            "offset": opened.utf16_offset,
            "length": length,
        }
        if opened.name == "a":
            url = opened.argument or "".join(self.out)[-length:]
            if not url:
                return
            entity["url"] = url
        elif opened.name == "tg-emoji":
            entity["custom_emoji_id"] = opened.argument
        elif opened.name == "code" and opened.argument:
            entity["language"] = opened.argument
        elif opened.name == "blockquote" and opened.argument:
            entity["type"] = "expandable_blockquote"
        elif opened.name == "pre":
            self._merge_code_into_pre(entity)
        self.entities.append(entity)

    def _merge_code_into_pre(self, pre: dict) -> None:
        """``<pre><code class="language-x">`` is one pre entity with a language, as in tdlib."""
        if not self.entities:
            return
        last = self.entities[-1]
        same_span = (last["offset"], last["length"]) == (pre["offset"], pre["length"])
        if last["type"] == "code" and same_span:
            self.entities.pop()
            if "language" in last:
                pre["language"] = last["language"]


def _tag_argument(tag: str, attributes: dict[str, str]) -> str:
    if tag == "a":
        return attributes.get("href", "")
    if tag == "code":
        cls = attributes.get("class", "")
        return cls[len("language-") :] if cls.startswith("language-") else ""
    if tag == "span":
        cls = attributes.get("class", "")
        return cls[len("tg-") :] if cls.startswith("tg-") else ""
    if tag == "tg-emoji":
        return attributes.get("emoji-id", "")
    if tag == "blockquote":
        return "1" if "expandable" in attributes else ""
    return ""


def decode_entity(text: str, pos: int) -> tuple[str | None, int]:
    """Decode the character reference at ``pos`` (``&lt;``, ``&#60;``, ``&#x3c;``).

    Returns (character, position after it), or (None, pos) when there is none. Like tdlib,
    the closing semicolon is optional.
    """
    end = pos + 1
    if text[end : end + 1] == "#":
        end += 1
        hexadecimal = text[end : end + 1] == "x"
        end += hexadecimal
        digits = "0123456789abcdefABCDEF" if hexadecimal else "0123456789"
        start = end
        while end < len(text) and text[end] in digits:
            end += 1
        if start == end or end - pos >= 10:
            return None, pos
        code = int(text[start:end], 16 if hexadecimal else 10)
        if code == 0 or code >= 0x10FFFF:
            return None, pos
        char = chr(code)
    else:
        while end < len(text) and text[end].isascii() and text[end].isalpha():
            end += 1
        char = NAMED_ENTITIES.get(text[pos + 1 : end])
        if char is None:
            return None, pos
    if text[end : end + 1] == ";":
        end += 1
    return char, end


def parse_html(source: str, *, strict_ampersand: bool = True) -> tuple[str, list[dict]]:
    """Visible text and entities (UTF-16 offsets) of Telegram HTML; raises HtmlError."""
    text, entities = _Parser(source, strict_ampersand).run()
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return text, entities


def trim(text: str, entities: list[dict]) -> tuple[str, list[dict]]:
    """Strip leading/trailing whitespace as Telegram does, shifting and clipping entities."""
    stripped = text.strip(TRIMMED)
    if not stripped:
        return "", []
    shift = utf16_len(text[: len(text) - len(text.lstrip(TRIMMED))])
    limit = utf16_len(stripped)
    kept = []
    for entity in entities:
        start = max(entity["offset"] - shift, 0)
        end = min(entity["offset"] + entity["length"] - shift, limit)
        if end > start:
            kept.append({**entity, "offset": start, "length": end - start})
    return stripped, kept
