# The lab's tiny server, run inside a VM's namespace: `python3 serve.py NAME PROTO:PORT...`
# answers every HTTP request on each http:PORT with status 200 and the body "NAME\n", and every
# datagram on each udp:PORT with "NAME\n" (on IPv6 and IPv4 where it can, else on IPv4).
# Prints "ready" once every socket listens; logs one line per answer.
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import ThreadingUDPServer

NAME = sys.argv[1]
BODY = (NAME + "\n").encode()


def log(text):
    print(text, flush=True)


class Http(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server_version = "wyvern-lab"

    def answer(self, body=True):
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        if body:
            self.wfile.write(BODY)

    def do_HEAD(self):
        self.answer(body=False)

    def log_message(self, fmt, *args):
        log("http %s %s" % (self.client_address[0], fmt % args))


for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
    setattr(Http, "do_" + method, Http.answer)


class Udp:
    def __init__(self, request, client, server):
        data, sock = request
        sock.sendto(BODY, client)
        log("udp %s %d bytes" % (client[0], len(data)))


def bind(cls, handler, port):
    """A server on [::]:port taking IPv4 too, or on 0.0.0.0:port without IPv6."""
    try:
        class Dual(cls):
            address_family = socket.AF_INET6
            daemon_threads = True
            allow_reuse_address = True

            def server_bind(self):
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                super().server_bind()

        return Dual(("::", port), handler)
    except OSError:
        class V4(cls):
            daemon_threads = True
            allow_reuse_address = True

        return V4(("0.0.0.0", port), handler)


servers = []
for spec in sys.argv[2:]:
    proto, port = spec.split(":")
    if proto == "http":
        servers.append(bind(ThreadingHTTPServer, Http, int(port)))
    elif proto == "udp":
        servers.append(bind(ThreadingUDPServer, Udp, int(port)))
    else:
        sys.exit("unknown protocol " + proto)
threads = [threading.Thread(target=s.serve_forever) for s in servers]
for t in threads:
    t.start()
log("ready " + " ".join(sys.argv[2:]))
for t in threads:
    t.join()
