"""uvicorn's httptools protocol with a bound on the request head (request line + headers).

httptools buffers a request head of any size: a client can send megabytes of one header and
the worker holds them all before the app sees a byte. uvicorn's h11 protocol has a bound
(`h11_max_incomplete_event_size`) but parses in Python, several times slower. This protocol
feeds the parser at most that many bytes of each head and answers 431 (JSON, as every error of
the API) past it, closing the connection. `related serve` selects it and sets the bound from
`RELATED_MAX_HEADER_BYTES`.
"""
from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from api.errors import error_body


class BoundedHeadProtocol(HttpToolsProtocol):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.max_head_bytes: int = self.config.h11_max_incomplete_event_size or (16 << 10)
        self.in_head = True  # the next bytes belong to a request line or headers
        self.head_bytes = 0

    def data_received(self, data: bytes) -> None:
        while data and self.in_head:
            room = self.max_head_bytes - self.head_bytes
            if room <= 0:
                self.refuse_head()
                return
            piece, data = data[:room], data[room:]
            self.head_bytes += len(piece)
            super().data_received(piece)  # may complete the head (and take a body after it)
            if self.transport.is_closing():
                return
        if data:
            super().data_received(data)

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.in_head = True
        super().on_message_complete()

    def refuse_head(self) -> None:
        message = f"request line and headers are larger than {self.max_head_bytes} bytes"
        self.logger.warning("refused a request: %s", message)
        body = json.dumps(error_body("header_too_large", message), separators=(",", ":")).encode()
        head = [STATUS_LINE[431]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.extend([
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ])
        self.transport.write(b"".join(head) + body)
        self.transport.close()
