"""A compatibility listener in front of the embedded broker, for Kafka clients whose protocol
parser trips over the broker's ApiVersions response: librdkafka 2.0.2 and older, and so the
kcat 1.7.1 that Debian 12 ships (see docs/kafka-clients.md).

It forwards every byte both ways and rewrites only three responses (shopvec.kafka.wire_rewrite).
It is for people and their tools; the workers and the Python client talk to the broker directly.

    python -m shopvec.kafka.compat --broker 127.0.0.1:9092 --listen 127.0.0.1:9093
    kcat -b 127.0.0.1:9093 -L
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import struct
from collections.abc import Sequence

from shopvec.kafka.wire_rewrite import REWRITTEN, Endpoint, request_header, rewrite_response

__all__ = ["CompatListener", "main"]

log = logging.getLogger(__name__)

_MAX_FRAME = 256 * 1024 * 1024  # far above any record batch a broker takes


async def _read_frame(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError:
        return None
    (size,) = struct.unpack(">i", head)
    if not 0 <= size <= _MAX_FRAME:
        raise ValueError(f"frame of {size} bytes")
    return await reader.readexactly(size)


def _frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


class CompatListener:
    """Accepts clients on `listen` and relays each to `broker` over its own connection."""

    def __init__(self, broker: Endpoint, listen: Endpoint) -> None:
        self.broker = broker
        self.listen = listen
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.listen.host, self.listen.port)
        log.info("listening on %s:%s for %s:%s", *self._address(), *self._broker())

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    def _address(self) -> tuple[str, int]:
        return self.listen.host, self.listen.port

    def _broker(self) -> tuple[str, int]:
        return self.broker.host, self.broker.port

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            broker_r, broker_w = await asyncio.open_connection(*self._broker())
        except OSError as exc:
            log.warning("broker %s:%s does not answer: %s", *self._broker(), exc)
            client_w.close()
            return
        # Responses come back in request order on one connection; the request's key and version
        # say how to read each, found by correlation id.
        pending: dict[int, tuple[int, int]] = {}
        upstream = asyncio.create_task(self._requests(client_r, broker_w, pending))
        downstream = asyncio.create_task(self._responses(broker_r, client_w, pending))
        try:
            await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (upstream, downstream):
                task.cancel()
            for writer in (broker_w, client_w):
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _requests(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pending: dict[int, tuple[int, int]],
    ) -> None:
        while (payload := await _read_frame(reader)) is not None:
            api_key, api_version, correlation_id = request_header(payload)
            if api_key in REWRITTEN:  # only these; a produce with acks=0 gets no response
                pending[correlation_id] = (api_key, api_version)
            writer.write(_frame(payload))
            await writer.drain()

    async def _responses(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pending: dict[int, tuple[int, int]],
    ) -> None:
        while (payload := await _read_frame(reader)) is not None:
            (correlation_id,) = struct.unpack_from(">i", payload, 0)
            request = pending.pop(correlation_id, None)
            if request is not None:
                try:
                    payload = rewrite_response(*request, payload, self.broker, self.listen)
                except ValueError as exc:  # pass it on as it came: the client will say why
                    log.warning("response to api %s v%s left as it was: %s", *request, exc)
            writer.write(_frame(payload))
            await writer.drain()


def _endpoint(text: str) -> Endpoint:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return Endpoint(host, int(port))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shopvec.kafka.compat", description=__doc__)
    parser.add_argument("--broker", type=_endpoint, required=True, help="the broker, HOST:PORT")
    parser.add_argument(
        "--listen", type=_endpoint, required=True, help="where clients connect, HOST:PORT"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    listener = CompatListener(args.broker, args.listen)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(listener.serve_forever())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
