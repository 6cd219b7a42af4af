"""daphne, with the upload bound enforced while the request body arrives, and websockets closed cleanly.

Daphne (through twisted) receives a whole request body before the ASGI application sees any of
it, so a bound checked in Django would come after a 10 GB body had been written to a temporary
file. This entry point gives daphne a request class that refuses a body as soon as its declared
length, or the bytes received so far, pass MAX_UPLOAD_SIZE_MB (plus room for multipart framing).
Per-user, smaller limits are checked later, chunk by chunk, by ``uploads.handlers``.

A websocket message over ``--websocket-max-message-size`` fails the connection; autobahn's default
drops the TCP connection (the client sees 1006, "abnormal"), so the factory here closes it with
the close handshake and 1009 ("message too big") instead.
"""

from __future__ import annotations

import io
import json

from daphne import http_protocol, server, ws_protocol
from daphne.cli import CommandLineInterface
from loguru import logger

from sam3site.config import get_config
from sam3site.errors import error_body
from sam3site.middleware import request_id_for

MULTIPART_ALLOWANCE_BYTES = 1024 * 1024


class BoundedWebRequest(http_protocol.WebRequest):
    body_limit = get_config().max_upload_size_mb * 1024 * 1024 + MULTIPART_ALLOWANCE_BYTES
    _refused = False
    _body_received = 0

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        # Twisted would parse form bodies itself (a second copy of every upload in memory) and answer
        # a bare, empty 400 to a form it cannot parse; Django parses them, and answers in our shape.
        self._parsePOSTFormSubmission = False

    def gotLength(self, length: int | None) -> None:  # noqa: N802 - twisted's name
        if length is not None and length > self.body_limit:
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 - twisted's name
        if self._refused:
            return
        self._body_received += len(data)
        if self._body_received > self.body_limit:
            self._refuse()
            return
        super().handleContentChunk(data)

    def process(self):  # noqa: ANN201 - daphne's signature
        if self._refused:
            return None
        return super().process()

    def _refuse(self) -> None:
        self._refused = True
        self.content = io.BytesIO()
        limit_mb = get_config().max_upload_size_mb
        request_id = request_id_for((self.getHeader(b"x-request-id") or b"").decode("latin-1"))
        body = json.dumps(
            error_body(
                "payload_too_large",
                f"The request body exceeds the upload limit of {limit_mb} MiB.",
                {"limit_bytes": limit_mb * 1024 * 1024},
                request_id,
            )
        ).encode()
        self.channel.transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\nX-Request-ID: %s\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (request_id.encode(), len(body), body)
        )
        method, path = self.method.decode("latin-1"), self.uri.decode("latin-1")[:200]
        logger.info("{} {} 413 refused while receiving request_id={}", method, path, request_id)
        self.channel.loseConnection()


class CleanlyClosingWebSocketFactory(ws_protocol.WebSocketFactory):
    def setProtocolOptions(self, **options: object) -> None:  # noqa: N802 - autobahn's name
        super().setProtocolOptions(failByDrop=False, **options)


def main() -> None:
    http_protocol.WebRequest = BoundedWebRequest  # HTTPFactory.buildProtocol looks the class up here
    server.WebSocketFactory = CleanlyClosingWebSocketFactory  # daphne's Server builds it from this name
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
