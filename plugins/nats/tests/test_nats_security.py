"""Authentication and TLS against a real ``nats-server``: credentials from URLs and options, TLS
upgrade after INFO (server-only and mutual), clear and fast refusals, and no secret in logs, errors,
``repr`` or statistics."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import pytest
import trustme
from nats_helpers import consumer_config, unique_prefixes, until_nats_py_subscribed, wait_until
from natsserver import NatsServer

from marketfeeder.logs import RedactingFilter
from marketfeeder.models import Event, Side, Trade
from marketfeeder.runtime.feeder import Feeder
from marketfeeder_nats.client import (
    NatsAuthError,
    NatsClient,
    NatsConnectionError,
    NatsTLSError,
    parse_servers,
    security_options,
)
from marketfeeder_nats.jetstream import JetStream
from marketfeeder_nats.sink import NatsSink
from marketfeeder_nats.source import NatsSource

pytestmark = pytest.mark.anyio

USER = "feeder"
#: Characters a URL must percent-encode, so decoding is exercised.
PASSWORD = "pa:ss@w/rd%7Esecret"
TOKEN = "tok3n-s3cr3t-value"
T0 = 1_767_225_600_000_000_000


def secret_free(text: str) -> bool:
    return PASSWORD not in text and TOKEN not in text and quote(PASSWORD, safe="") not in text


# --- certificates and servers ---------------------------------------------------------------------


class Pki:
    def __init__(self, root: Path) -> None:
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        client = ca.issue_cert("feeder@example.org")
        self.ca = str(root / "ca.pem")
        self.server_cert = str(root / "server.pem")
        self.server_key = str(root / "server.key")
        self.client_cert = str(root / "client.pem")
        self.client_key = str(root / "client.key")
        self.other_ca = str(root / "other-ca.pem")
        ca.cert_pem.write_to_path(self.ca)
        server.cert_chain_pems[0].write_to_path(self.server_cert)
        server.private_key_pem.write_to_path(self.server_key)
        client.cert_chain_pems[0].write_to_path(self.client_cert)
        client.private_key_pem.write_to_path(self.client_key)
        trustme.CA().cert_pem.write_to_path(self.other_ca)

    def tls_args(self) -> list[str]:
        return ["--tls", "--tlscert", self.server_cert, "--tlskey", self.server_key]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def _server(args: list[str]) -> Iterator[NatsServer]:
    server = NatsServer(args=args).start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def userpass_server() -> Iterator[NatsServer]:
    yield from _server(["--user", USER, "--pass", PASSWORD])


@pytest.fixture(scope="module")
def token_server() -> Iterator[NatsServer]:
    yield from _server(["--auth", TOKEN])


@pytest.fixture(scope="module")
def tls_server(pki: Pki) -> Iterator[NatsServer]:
    """TLS (server certificate only) and user/password."""
    yield from _server([*pki.tls_args(), "--user", USER, "--pass", PASSWORD])


@pytest.fixture(scope="module")
def mtls_server(pki: Pki) -> Iterator[NatsServer]:
    yield from _server(["--tlsverify", "--tlscert", pki.server_cert, "--tlskey", pki.server_key,
                        "--tlscacert", pki.ca])


def hostport(server: NatsServer) -> str:
    return f"127.0.0.1:{server.port}"


async def round_trip(nc: NatsClient) -> None:
    """A message through the server and back: the connection really works."""
    sub = await nc.subscribe("sec.test")
    await nc.publish("sec.test", b"hello")
    assert (await sub.next_msg(5.0)).data == b"hello"


# --- parsing and redaction (no server) ------------------------------------------------------------


def test_urls_carry_credentials_that_stay_hidden() -> None:
    url = f"nats://{USER}:{quote(PASSWORD, safe='')}@h1:4223,tls://{TOKEN}@h2"
    assert parse_servers(url) == [("h1", 4223), ("h2", 4222)]
    nc = NatsClient(url)
    assert nc.servers == [("h1", 4223), ("h2", 4222)]
    assert nc._targets[0].user == USER and nc._targets[0].password == PASSWORD  # percent-decoded
    assert nc._targets[1].token == TOKEN and nc._targets[1].tls
    assert repr(nc) == "<NatsClient nats://h1:4223,tls://h2:4222 not connected>"
    assert secret_free(str(nc.statistics()))
    with pytest.raises(ValueError, match="unsupported NATS URL") as info:
        NatsClient(f"http://{USER}:{quote(PASSWORD, safe='')}@h1")
    assert secret_free(str(info.value))


def test_option_validation() -> None:
    with pytest.raises(ValueError, match="password given without user"):
        NatsClient(password=PASSWORD)
    with pytest.raises(ValueError, match="either user/password or token"):
        NatsClient(user=USER, token=TOKEN)
    with pytest.raises(ValueError, match="tls_key given without tls_cert"):
        NatsClient(tls_key="k.pem")
    with pytest.raises(ValueError, match=r"tls_ca '/nonexistent/ca\.pem'"):
        NatsClient(tls_ca="/nonexistent/ca.pem")
    opts = security_options({"url": "x", "user": USER, "password": PASSWORD, "tls_ca": "ca.pem", "shards": 4})
    assert opts == {"user": USER, "password": PASSWORD, "tls_ca": "ca.pem"}
    assert secret_free(repr(opts)) and "ca.pem" in repr(opts)
    with pytest.raises(ValueError, match="unknown option"):
        NatsSink({"passwd": PASSWORD})
    assert secret_free(repr(NatsSink({"user": USER, "password": PASSWORD}).options.security))
    assert NatsSource({"token": TOKEN}).options.security == {"token": TOKEN}
    env = {"MARKETFEEDER_NATS_USER": USER, "MARKETFEEDER_NATS_PASSWORD": PASSWORD}
    assert security_options({"tls_ca": "ca.pem"}, env) == {"user": USER, "password": PASSWORD, "tls_ca": "ca.pem"}
    assert security_options({"token": TOKEN}, env) == {"token": TOKEN}  # options win, whole


def test_core_log_redaction_hides_url_userinfo() -> None:
    redact = RedactingFilter().redact
    text = redact(f"connecting to nats://{USER}:{quote(PASSWORD, safe='')}@10.0.0.1:4222 and tls://{TOKEN}@h2")
    assert secret_free(text)
    assert "nats://***@10.0.0.1:4222" in text and "tls://***@h2" in text


# --- authentication -------------------------------------------------------------------------------


async def test_user_password_from_url_and_from_options(
    userpass_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with NatsClient(f"nats://{USER}:{quote(PASSWORD, safe='')}@{hostport(userpass_server)}") as nc:
        await round_trip(nc)
        assert secret_free(repr(nc)) and secret_free(str(nc.statistics()))
    async with NatsClient(userpass_server.url, user=USER, password=PASSWORD) as nc:
        await round_trip(nc)
        assert secret_free(str(nc.statistics()))
    assert secret_free(caplog.text)


async def test_wrong_password_fails_fast_naming_the_server(
    userpass_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = PASSWORD + "x"
    # reconnect_timeout=None: only the fail-fast path can end this within the guard.
    with anyio.fail_after(20):
        nc = NatsClient(userpass_server.url, user=USER, password=wrong, reconnect_timeout=None)
        with pytest.raises(NatsAuthError, match=f"NATS server {hostport(userpass_server)} refused") as info:
            await nc.connect()
        assert "Authorization Violation" in str(info.value)
        assert isinstance(info.value, NatsConnectionError)  # callers handling connection errors still do
        assert wrong not in str(info.value) and wrong not in str(nc.statistics()) and wrong not in caplog.text
        assert "Authorization Violation" in nc.statistics()["last_error"]
        await nc.close()
        with pytest.raises(NatsAuthError, match="no credentials given"):
            await NatsClient(userpass_server.url, reconnect_timeout=None).connect()
    assert secret_free(caplog.text)


async def test_a_consumer_feeder_with_wrong_credentials_stops_with_the_reason(
    userpass_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Through the core: the source fails at once with the server's reason (no silent retrying)."""
    prefixes = unique_prefixes()
    with anyio.fail_after(20):
        async with Feeder(consumer_config(userpass_server.url, prefixes, user=USER, password="wrong-" + PASSWORD,
                                          wait_for_streams=0.5)) as feeder:
            await wait_until(lambda: bool(feeder.source_errors))
    (error,) = feeder.source_errors.values()
    assert error.startswith("NatsAuthError: NATS server 127.0.0.1:") and "Authorization Violation" in error
    assert secret_free(error) and secret_free(caplog.text)


async def test_token_from_url_and_from_options(token_server: NatsServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with NatsClient(f"nats://{TOKEN}@{hostport(token_server)}") as nc:
        await round_trip(nc)
    async with NatsClient(token_server.url, token=TOKEN) as nc:
        await round_trip(nc)
    with anyio.fail_after(20), pytest.raises(NatsAuthError, match="Authorization Violation"):
        await NatsClient(token_server.url, token="not-" + TOKEN, reconnect_timeout=None).connect()
    assert secret_free(caplog.text)


async def test_auth_error_after_a_reconnect_is_retried_within_the_reconnect_timeout(
    own_nats_server: NatsServer,
) -> None:
    """Credentials rotated on the server while connected: not fatal at once (the rotation may reach
    the client soon), but bounded by reconnect_timeout, and the error says why."""
    server = own_nats_server
    server.args = ["--user", USER, "--pass", PASSWORD]
    server.start()
    with anyio.fail_after(30):
        async with NatsClient(server.url, user=USER, password=PASSWORD, reconnect_timeout=1.5) as nc:
            await nc.flush()
            server.stop()
            server.args = ["--user", USER, "--pass", "rotated-" + PASSWORD]
            server.start()

            async def until_refused() -> None:
                for _ in range(3):  # the first call may only see the old connection die
                    try:
                        await nc.flush(max_wait=5.0)
                    except NatsConnectionError as exc:
                        if "Authorization Violation" in str(exc):
                            raise

            with pytest.raises(NatsConnectionError, match="Authorization Violation") as info:
                await until_refused()
            assert not isinstance(info.value, NatsAuthError)
            assert nc.reconnects == 0 and secret_free(str(info.value))
            server.stop()
            server.args = ["--user", USER, "--pass", PASSWORD]
            server.start()
            await nc.flush()
            assert nc.reconnects == 1


# --- TLS ------------------------------------------------------------------------------------------


async def test_tls_with_a_private_ca(tls_server: NatsServer, pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    auth = f"{USER}:{quote(PASSWORD, safe='')}@"
    # tls:// URL, and a nats:// URL upgraded because the server requires TLS.
    for url in (f"tls://{auth}{hostport(tls_server)}", f"nats://{auth}{hostport(tls_server)}"):
        async with NatsClient(url, tls_ca=pki.ca) as nc:
            await round_trip(nc)
            assert nc.statistics()["tls"] is True
            assert nc.server_info["tls_required"] is True
    async with NatsClient(f"nats://{auth}localhost:{tls_server.port}", tls_ca=pki.ca) as nc:
        await round_trip(nc)
    assert secret_free(caplog.text)


async def test_tls_refused_with_a_clear_error(tls_server: NatsServer, nats_server: NatsServer, pki: Pki) -> None:
    with anyio.fail_after(20):
        # Not the CA that signed the server's certificate; then the system CAs (no tls_ca).
        for kwargs in ({"tls_ca": pki.other_ca}, {}):
            nc = NatsClient(tls_server.url, user=USER, password=PASSWORD, reconnect_timeout=None, **kwargs)
            with pytest.raises(NatsTLSError, match=f"TLS handshake with NATS server {hostport(tls_server)} failed: "
                                                   "unable to get local issuer certificate"):
                await nc.connect()
        with pytest.raises(NatsTLSError, match=r"Hostname mismatch|doesn't match|IP address mismatch"):
            await NatsClient(tls_server.url, tls_ca=pki.ca, tls_hostname="feeds.example.org",
                             reconnect_timeout=None).connect()
        # TLS asked for, the server offers none: no fall-back to plain text.
        with pytest.raises(NatsTLSError, match=f"NATS server {hostport(nats_server)} does not offer TLS"):
            await NatsClient(f"tls://{hostport(nats_server)}", reconnect_timeout=None).connect()
        with pytest.raises(NatsTLSError, match="does not offer TLS"):
            await NatsClient(nats_server.url, tls_ca=pki.ca, reconnect_timeout=None).connect()


async def test_mutual_tls(mtls_server: NatsServer, pki: Pki) -> None:
    async with NatsClient(mtls_server.url, tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key=pki.client_key) as nc:
        await round_trip(nc)
        assert nc.statistics()["tls"] is True
    ctx = ssl.create_default_context(cafile=pki.ca)
    ctx.load_cert_chain(pki.client_cert, pki.client_key)
    async with NatsClient(mtls_server.url, tls_context=ctx) as nc:
        await round_trip(nc)
    # No client certificate: the server refuses it, reported as a TLS error, at once.
    with anyio.fail_after(20), pytest.raises(NatsTLSError, match=hostport(mtls_server)):
        await NatsClient(mtls_server.url, tls_ca=pki.ca, reconnect_timeout=None).connect()


async def test_jetstream_publish_and_pull_through_tls(tls_server: NatsServer, pki: Pki) -> None:
    """The sink and the source pass their security options through: publish acked, pull delivered."""
    prefixes = unique_prefixes()
    security = {"user": USER, "password": PASSWORD, "tls_ca": pki.ca}
    events: list[Event] = [Trade("binance", "ETH-USDT", T0 + i, T0 + 10 + i, i, 2000.0 + i, 0.5, Side.SELL, None)
                           for i in range(50)]
    with anyio.fail_after(20):
        sink = NatsSink({"url": tls_server.url, "storage": "memory", **prefixes, **security})
        await sink.open()
        await sink.write_batch(events)
        await sink.close()
        assert sink.acked == 50
        stats = sink.statistics()
        assert stats["client"]["tls"] is True and secret_free(str(stats))
        source = NatsSource({"url": tls_server.url, "durable": "sec", "types": ["trades"], **prefixes, **security})
        got: list[Event] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(source.consume, got.append)
            await wait_until(lambda: len(got) >= 50)
            tg.cancel_scope.cancel()
        assert got == events
        assert secret_free(str(source.statistics()))
        # And the JetStream API directly.
        async with NatsClient(tls_server.url, **security) as nc:
            js = JetStream(nc)
            assert (await js.stream_info(f"{prefixes['stream_prefix']}_TRADES"))["state"]["messages"] == 50


async def test_nats_py_agrees_over_tls(tls_server: NatsServer, pki: Pki, anyio_backend: str) -> None:
    """The reference client (nats-py) receives over TLS what this client publishes over TLS."""
    if anyio_backend != "asyncio":
        pytest.skip("nats-py runs on asyncio only")
    nats = pytest.importorskip("nats")
    ctx = ssl.create_default_context(cafile=pki.ca)
    got: list[Any] = []
    with anyio.fail_after(20):
        ref = await nats.connect(f"tls://{hostport(tls_server)}", tls=ctx, user=USER, password=PASSWORD,
                                 allow_reconnect=False)
        try:
            sub = await ref.subscribe("sec.oracle")
            await ref.flush()
            async with NatsClient(f"tls://{hostport(tls_server)}", tls_ca=pki.ca, user=USER, password=PASSWORD) as nc:
                await until_nats_py_subscribed(nc, sub, "sec.oracle")
                await nc.publish("sec.oracle", b"through tls", headers={"K": "v"})
                await nc.flush()
            got.append(await sub.next_msg(timeout=5))
        finally:
            await ref.close()
    assert got[0].data == b"through tls" and got[0].headers == {"K": "v"}
