"""The Fleet gateway: the one door of the coordinating center that faces the network.

Flower's SuperLink serves three APIs on one HTTP port: the Fleet API that hospitals' SuperNodes
call (``/v1/fleet/...``), the Control API that submits, lists and stops runs and registers nodes
(``/v1/control/...``), and the ServerAppIo API of the ServerApp process (``/v1/runtime/...``).
The open-source SuperLink has no authentication on the last two. So fedecg runs the SuperLink on
loopback only, and puts this gateway on the address hospitals dial: it terminates TLS with the
server certificate and forwards the Fleet API's POST requests, byte for byte and streamed, to
the SuperLink (whose TLS it verifies with the federation's CA). Every other request is refused
with 403 and logged with its path and the client's address. SuperNode authentication is
untouched: the signed headers travel through as they are and the SuperLink checks them.

Run as ``python -m fedecg.deploy.gateway --listen HOST:PORT --upstream 127.0.0.1:PORT
--ca ca.crt --cert server.pem --key server.key`` (``fedecg server start`` does it).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import ssl
from collections.abc import AsyncIterator, Sequence

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

FLEET_CALL = re.compile(r"/v1/fleet/[a-z][a-z-]*")
_HOP_BY_HOP = frozenset({"host", "connection", "keep-alive", "proxy-authenticate",
                         "proxy-authorization", "te", "trailer", "transfer-encoding",
                         "upgrade"})

logger = logging.getLogger("fedecg.gateway")


def is_fleet_call(method: str, path: str) -> bool:
    """Whether a request belongs to the Fleet API (the only one the gateway forwards):
    a POST to ``/v1/fleet/<call>``, the call's name plain letters and dashes."""
    return method == "POST" and FLEET_CALL.fullmatch(path) is not None


def _forwarded_headers(headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in headers if name.lower() not in _HOP_BY_HOP]


def create_gateway(upstream: str, ca: str) -> Starlette:
    """The gateway's ASGI app: Fleet calls go to ``https://upstream``, the rest get 403."""
    client = httpx.AsyncClient(base_url=f"https://{upstream}",
                               verify=ssl.create_default_context(cafile=ca),
                               timeout=httpx.Timeout(60.0, read=None))

    async def forward(request: Request) -> Response:
        path = request.url.path
        peer = request.client.host if request.client else "?"
        if not is_fleet_call(request.method, path):
            logger.warning("refused %s %s from %s: only the Fleet API is served here",
                           request.method, path, peer)
            return JSONResponse(status_code=403, content={
                "detail": "this address serves only the Fleet API that SuperNodes use; "
                          "runs and nodes are managed on the coordinating center's machine"})
        upstream_request = client.build_request(
            request.method, path, params=request.query_params,
            headers=_forwarded_headers(request.headers.items()), content=request.stream())
        try:
            answer = await client.send(upstream_request, stream=True)
        except httpx.HTTPError as exc:
            logger.error("the SuperLink did not answer %s from %s: %s", path, peer, exc)
            return JSONResponse(status_code=502, content={"detail": "SuperLink unavailable"})
        return StreamingResponse(answer.aiter_raw(), status_code=answer.status_code,
                                 headers=dict(_forwarded_headers(answer.headers.items())),
                                 background=BackgroundTask(answer.aclose))

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with client:
            yield

    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)],
                     lifespan=lifespan)


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the gateway until terminated."""
    parser = argparse.ArgumentParser(prog="python -m fedecg.deploy.gateway",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT hospitals dial")
    parser.add_argument("--upstream", required=True, help="the SuperLink's loopback HOST:PORT")
    parser.add_argument("--ca", required=True, help="the federation's ca.crt")
    parser.add_argument("--cert", required=True, help="the server certificate (PEM)")
    parser.add_argument("--key", required=True, help="the server certificate's private key")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    host, port = _host_port(args.listen)
    logger.info("Fleet gateway on %s:%d -> SuperLink %s (Fleet API only)", host, port,
                args.upstream)
    uvicorn.run(create_gateway(args.upstream, args.ca), host=host, port=port,
                ssl_certfile=args.cert, ssl_keyfile=args.key, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
