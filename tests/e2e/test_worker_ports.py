"""Closed ports: the real worker's HTTP and metrics ports listen on 127.0.0.1 unless a setting opens
them; Faust's table, router, graph and stats views are gone; /wall/ asks for a token when the port is
open beyond loopback; /health/ reports liveness. The listening sockets are read from /proc/net/tcp*
(no connection is made to anything but 127.0.0.1)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]
TOKEN = "a-wall-token-for-this-test-0001"


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the LISTEN sockets on ``port``, as text (IPv4 and IPv6)."""
    found: set[str] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:
                if width == 8:
                    raw = bytes.fromhex(address)[::-1]
                    found.add(".".join(str(b) for b in raw))
                else:
                    found.add("::" if set(address) == {"0"} else address)
    return found


def get(port: int, path: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_by_default_both_ports_listen_on_loopback_only_and_faust_views_are_off(worker_factory) -> None:
    worker = worker_factory()
    worker.wait_healthy()
    assert listening_addresses(worker.web_port) == {"127.0.0.1"}
    assert listening_addresses(worker.metrics_port) == {"127.0.0.1"}
    for path in ("/table/cases/", "/router/", "/graph/", "/stats/", "/table/case-sources/"):
        assert get(worker.web_port, path)[0] == 404, path
    status, body = get(worker.web_port, "/health/")
    report = json.loads(body)
    assert status == 200 and report["ok"] is True and report["problems"] == []
    assert get(worker.web_port, "/wall/")[0] == 200, "on loopback the wall needs no token"


def test_opened_beyond_loopback_the_wall_asks_for_its_token(worker_factory) -> None:
    worker = worker_factory(web_host="0.0.0.0", wall_token=TOKEN)
    worker.wait_healthy()
    assert listening_addresses(worker.web_port) == {"0.0.0.0"}
    assert listening_addresses(worker.metrics_port) == {"127.0.0.1"}, "metrics stay closed unless opened too"
    status, body = get(worker.web_port, "/wall/")
    assert status == 401 and b"CITYGRID_WALL_TOKEN" in body
    assert get(worker.web_port, "/wall/", token="wrong-token")[0] == 401
    assert get(worker.web_port, "/wall/", token=TOKEN)[0] == 200
    assert get(worker.web_port, "/health/")[0] == 200, "the probes need no token"
