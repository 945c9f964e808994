"""A TCP proxy in front of PostgreSQL that fails the way a restarting server does.

The tests must not restart the shared server, so the bot's DATABASE_URL points here
instead (`proxy.url(database_url)`), and the proxy plays the restart:

- `outage()` drops every open connection at once (a query in progress fails, as when
  PostgreSQL's backends are killed) and answers every new one as PostgreSQL does while it
  starts up again (FATAL 57P03), until `restore()`.
- `outage_at_commit(forward=..., of=...)` starts that outage at the moment a client sends
  COMMIT (of a transaction that sent the bytes `of`, such as a person's chat id): with
  `forward=False` the COMMIT never reaches the server, so the transaction is rolled back;
  with `forward=True` the server commits, and the connection drops before its answer
  reaches the client, which cannot tell whether its transaction was kept.

Spotting COMMIT means reading the protocol, so the client must not use TLS: `url()`
turns it off (`ssl=disable`).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

from sqlalchemy.engine import make_url

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
# asyncpg commits with a simple query: 'Q', its length (4 + 8), "COMMIT;" and a NUL.
COMMIT_MESSAGE = b"Q" + struct.pack("!i", 12) + b"COMMIT;\x00"
ROLLBACK_MESSAGE = b"Q" + struct.pack("!i", 14) + b"ROLLBACK;\x00"


def error_response(severity: str, code: str, message: str) -> bytes:
    """A PostgreSQL ErrorResponse message."""
    fields = b"".join(kind + value.encode() + b"\x00" for kind, value in (
        (b"S", severity), (b"V", severity), (b"C", code), (b"M", message)))
    body = fields + b"\x00"
    return b"E" + struct.pack("!i", len(body) + 4) + body


def chat_marker(chat_id: int) -> bytes:
    """A chat id as asyncpg sends a BIGINT parameter: eight bytes, big-endian."""
    return struct.pack("!q", chat_id)


STARTING_UP = error_response("FATAL", "57P03", "the database system is starting up")


class _CommitTrigger:
    def __init__(self, forward: bool, marker: bytes | None) -> None:
        self.forward = forward
        self.marker = marker
        self.happened = asyncio.Event()


class _Pipe:
    """One client connection and its connection to the server."""

    def __init__(self, proxy: PostgresProxy, client: asyncio.StreamWriter,
                 server: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.marked = False  # this transaction sent the commit trigger's marker
        # Set once the server has taken a COMMIT whose answer must not reach the client.
        self.swallowing: _CommitTrigger | None = None

    def cut(self) -> None:
        """Drop both sides at once (a reset, not a polite goodbye)."""
        self.client.transport.abort()
        self.server.transport.abort()

    def close(self) -> None:
        self.client.close()
        self.server.close()

    async def client_to_server(self, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(65536):
            trigger = self.proxy.commit_trigger
            if trigger is not None and trigger.marker is not None and trigger.marker in chunk:
                self.marked = True
            if trigger is not None and COMMIT_MESSAGE in chunk \
                    and (trigger.marker is None or self.marked):
                self.proxy.commit_trigger = None
                if trigger.forward:
                    # The server gets the COMMIT; its answer is swallowed (see below).
                    self.server.write(chunk)
                    self.swallowing = trigger
                    self.client.transport.abort()
                    self.proxy.outage(keep=self)
                else:
                    self.proxy.outage()
                    trigger.happened.set()
                return
            if COMMIT_MESSAGE in chunk or ROLLBACK_MESSAGE in chunk:
                self.marked = False  # a new transaction starts
            self.proxy.commits += chunk.count(COMMIT_MESSAGE)
            self.server.write(chunk)
            await self.server.drain()

    async def server_to_client(self, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(65536):
            if self.swallowing is not None:
                # The server has answered the COMMIT, so it is kept; now drop the line.
                self.server.transport.abort()
                self.swallowing.happened.set()
                return
            self.client.write(chunk)
            await self.client.drain()


class PostgresProxy:
    def __init__(self, upstream_host: str = "127.0.0.1", upstream_port: int = 5432) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.down = False
        self.connections = 0  # connections made to the server through the proxy
        self.refused = 0  # connections answered "starting up" during an outage
        self.commits = 0  # COMMITs passed on to the server
        self.commit_trigger: _CommitTrigger | None = None
        self._pipes: set[_Pipe] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> PostgresProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for pipe in list(self._pipes):
            pipe.cut()
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> PostgresProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, database_url: str) -> str:
        """`database_url` with the proxy's address in place of the server's, without TLS."""
        parsed = make_url(database_url)
        through = parsed.set(host="127.0.0.1", port=self.port).update_query_dict(
            {"ssl": "disable"})
        return through.render_as_string(hide_password=False)

    def outage(self, keep: _Pipe | None = None) -> None:
        """Drop every open connection; answer new ones "starting up" until `restore()`."""
        self.down = True
        for pipe in list(self._pipes):
            if pipe is not keep:
                pipe.cut()

    def restore(self) -> None:
        self.down = False

    def outage_at_commit(self, forward: bool, of: bytes | None = None) -> asyncio.Event:
        """Start an outage when a client next sends COMMIT, of a transaction that sent the
        bytes `of` if given (`chat_marker(chat_id)` for a person's turn); the event is set
        once it has (with `forward`, once the server has answered the COMMIT)."""
        trigger = _CommitTrigger(forward, of)
        self.commit_trigger = trigger
        return trigger.happened

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            await self._answer_starting_up(reader, writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        pipe = _Pipe(self, writer, up_writer)
        self._pipes.add(pipe)
        pumps = [asyncio.ensure_future(pipe.client_to_server(reader)),
                 asyncio.ensure_future(pipe.server_to_client(up_reader))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            if pipe.swallowing is not None:  # wait for the server's answer to the COMMIT
                await asyncio.wait(pumps, timeout=10)
        finally:
            self._pipes.discard(pipe)
            for pump in pumps:
                pump.cancel()
            # One side said goodbye (asyncpg waits for the server to hang up): pass it on.
            pipe.close()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _answer_starting_up(self, reader: asyncio.StreamReader,
                                  writer: asyncio.StreamWriter) -> None:
        """Read the startup packet (declining TLS), then refuse as a starting server does."""
        self.refused += 1
        try:
            while True:
                header = await asyncio.wait_for(reader.readexactly(8), 5)
                length, code = struct.unpack("!ii", header)
                if length == 8 and code in (SSL_REQUEST, GSSENC_REQUEST):
                    writer.write(b"N")
                    continue
                await asyncio.wait_for(reader.readexactly(length - 8), 5)
                break
            writer.write(STARTING_UP)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.close()
