"""A minimal raw NETCONF-over-SSH client (paramiko channel + our own framing) for exact byte tests."""

from __future__ import annotations

import socket

import paramiko

from server.framing import NEED_DATA, Framer
from server.xmlns import NC_BASE_10, NC_BASE_11, NC_NS

HELLO = (
    f'<hello xmlns="{NC_NS}"><capabilities><capability>{NC_BASE_10}</capability>'
    f"<capability>{NC_BASE_11}</capability></capabilities></hello>]]>]]>"
).encode()


class RawClient:
    def __init__(self, port: int, user: str, password: str, *, chunked: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.transport = paramiko.Transport(self.sock)
        try:
            self.transport.connect(username=user, password=password)
            self.chan = self.transport.open_session(timeout=30)
            self.chan.settimeout(30)
            self.chan.invoke_subsystem("netconf")
        except BaseException:
            self.transport.close()
            self.sock.close()
            raise
        self.framer = Framer(1 << 31)
        self.hello = self.recv()
        if chunked:
            self.chan.sendall(HELLO)
            self.framer.use_chunked()
        else:
            self.chan.sendall(HELLO.replace(f"<capability>{NC_BASE_11}</capability>".encode(), b""))

    def send_raw(self, data: bytes) -> None:
        # paramiko's sendall re-slices the remaining bytes after every window-sized send (quadratic on a
        # 15 MB message): hand it 256 KB pieces so the client does not dominate what is measured
        step = 256 * 1024
        for i in range(0, len(data), step):
            self.chan.sendall(data[i : i + step])

    def send(self, payload: bytes) -> None:
        self.send_raw(self.framer.frame(payload))

    def recv(self) -> bytes:
        while True:
            msg = self.framer.next_message()
            if msg is not NEED_DATA:
                return msg
            data = self.chan.recv(1 << 20)
            if not data:
                raise EOFError("server closed the channel")
            self.framer.receive_data(data)

    def rpc(self, body: str, mid: str = "1") -> bytes:
        self.send(f'<rpc xmlns="{NC_NS}" message-id="{mid}">{body}</rpc>'.encode())
        return self.recv()

    def close(self) -> None:
        try:
            self.chan.close()
        finally:
            self.transport.close()
            self.sock.close()
