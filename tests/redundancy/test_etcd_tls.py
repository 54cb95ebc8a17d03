"""TLS towards etcd: real etcd members serving https:// with --client-cert-auth (certificates made
here), a member of a redundancy group that leads and replicates through them, and the clients etcd
must refuse: no client certificate, one from another CA, a server name the members' certificate
does not carry, plain text."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from etcd_cluster import EtcdCluster

from mipha.bootstrap import BootstrapError, from_dict
from mipha.journal import BindingRecord
from mipha.redundancy import Member, RedundancyError, config_from, etcd_client

pytestmark = pytest.mark.slow

TTL = 2


def _issue(path: Path, cn: str, issuer: tuple | None, *, server: bool = False) -> tuple:
    """Write ``path`` (certificate) and ``path.key``; self-signed CA when ``issuer`` is None."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_name, issuer_key = (name, key) if issuer is None else issuer
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if server:
        names = [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("etcd.test")]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.with_suffix(".key").write_bytes(pem)
    return name, key


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """ca.pem signs server.pem (127.0.0.1, etcd.test) and client.pem; rogue.pem signs rogue-client.pem."""
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = _issue(pki / "ca.pem", "mipha test etcd CA", None)
    _issue(pki / "server.pem", "etcd", ca, server=True)
    _issue(pki / "client.pem", "mipha-a", ca)
    rogue = _issue(pki / "rogue.pem", "rogue CA", None)
    _issue(pki / "rogue-client.pem", "mipha-a", rogue)
    return pki


@pytest.fixture
def tls_etcd(tmp_path: Path, pki: Path):
    tls = {"ca": pki / "ca.pem", "cert": pki / "server.pem", "key": pki / "server.key"}
    with EtcdCluster(tmp_path / "etcd", tls=tls).running() as cluster:
        yield cluster


def section(etcd: EtcdCluster, pki: Path, **tls: object) -> dict:
    return {"etcd": etcd.endpoints, "group": "tls", "node": "a", "lease-ttl": TTL, **tls}


def test_a_member_leads_and_replicates_over_tls_with_a_client_certificate(tls_etcd, pki) -> None:
    assert all(e.startswith("https://") for e in tls_etcd.endpoints)
    config = config_from(
        section(
            tls_etcd,
            pki,
            **{
                "tls-ca": pki / "ca.pem",
                "tls-certificate": pki / "client.pem",
                "tls-private-key": pki / "client.key",
            },
        ),
        "[redundancy]",
    )
    assert config.tls is not None and config.tls.server_name == "127.0.0.1"

    async def scenario() -> None:
        async def nothing(_: object) -> None:
            return None

        member = Member(config, on_active=nothing, on_standby=nothing)
        await member.start()
        try:
            deadline = time.monotonic() + 20
            while not member.token:
                assert time.monotonic() < deadline, "the member did not become active over TLS"
                await asyncio.sleep(0.05)
            record = BindingRecord(
                "vr", "10.1.0.1", "192.0.2.1", "mn", "192.0.2.1", 434, 60, time.time(), 1, 0, "ipip"
            )
            await asyncio.wait_for(member.replicator.submit([record]), 10)
        finally:
            await member.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))
    stored = tls_etcd.ctl("get", "/mipha/tls/bindings/vr/10.1.0.1/192.0.2.1", "--print-value-only")
    assert json.loads(stored)["home_address"] == "10.1.0.1"


async def _refused(client) -> str:
    """The request must fail (etcd, or the client's own check of the server, refuses the channel);
    returns the client's error."""
    try:
        with pytest.raises(Exception) as info:  # gRPC: a failed handshake is "unavailable"
            await asyncio.wait_for(client.put(b"/mipha/tls/intruder", b"x"), 5)
        return str(info.value)
    finally:
        await client.close()


def rejections(etcd: EtcdCluster) -> str:
    """What the members logged about connections they rejected."""
    return "".join(
        line for m in etcd.members for line in m.log.read_text().splitlines() if "rejected" in line
    )


def test_etcd_refuses_clients_without_the_right_certificate(tls_etcd, pki) -> None:
    eps = tuple(("127.0.0.1", m.client_port) for m in tls_etcd.members)

    def tls(**keys: object):
        return config_from(section(tls_etcd, pki, **{"tls-ca": pki / "ca.pem", **keys}), "[redundancy]").tls

    refused = {
        "no client certificate": etcd_client(eps, tls=tls()),
        "a client certificate of another CA": etcd_client(
            eps,
            tls=tls(
                **{"tls-certificate": pki / "rogue-client.pem", "tls-private-key": pki / "rogue-client.key"}
            ),
        ),
        "a name the members' certificate lacks": etcd_client(
            eps,
            tls=tls(
                **{
                    "tls-certificate": pki / "client.pem",
                    "tls-private-key": pki / "client.key",
                    "tls-server-name": "etcd.other",
                }
            ),
        ),
        "plain text": etcd_client(eps),
    }
    errors = {}
    for what, client in refused.items():
        try:
            errors[what] = asyncio.run(_refused(client))
        except BaseException as exc:
            raise AssertionError(f"etcd accepted a client with {what}") from exc
    assert "Hostname Verification" in errors["a name the members' certificate lacks"]
    logged = rejections(tls_etcd)
    for reason in (
        "client didn't provide a certificate",
        "certificate signed by unknown authority",
        "does not look like a TLS handshake",
    ):
        assert reason in logged, f"etcd logged no rejection for: {reason}"
    assert tls_etcd.ctl("get", "/mipha/tls/intruder", "--print-value-only").strip() == ""
    # the same client with the right name and certificate is accepted (the refusals were not an accident)
    good = etcd_client(
        eps,
        tls=tls(
            **{
                "tls-certificate": pki / "client.pem",
                "tls-private-key": pki / "client.key",
                "tls-server-name": "etcd.test",
            }
        ),
    )

    async def accepted() -> None:
        try:
            await asyncio.wait_for(good.put(b"/mipha/tls/welcome", b"y"), 10)
        finally:
            await good.close()

    asyncio.run(accepted())
    assert tls_etcd.ctl("get", "/mipha/tls/welcome", "--print-value-only").strip() == "y"


def test_tls_keys_are_checked(tmp_path: Path, pki: Path) -> None:
    https = {"etcd": ["https://127.0.0.1:2379", "https://127.0.0.1:22379"], "group": "g", "node": "a"}
    ca = {"tls-ca": "pki/ca.pem"}
    boot = from_dict({"redundancy": {**https, **ca}}, base=tmp_path)
    assert boot.redundancy.tls.ca == tmp_path / "pki" / "ca.pem"  # relative to the bootstrap file
    assert boot.redundancy.tls.cert is None and boot.redundancy.tls.server_name == "127.0.0.1"
    assert from_dict({"redundancy": https}, base=tmp_path).redundancy.tls.ca is None  # the system's roots
    assert (
        from_dict({"redundancy": {**https, "etcd": ["http://127.0.0.1:1"]}}, base=tmp_path).redundancy.tls
        is None
    )
    for bad, words in [
        ({**https, "etcd": ["http://127.0.0.1:1"], **ca}, "tls-ca need https://"),
        ({**https, "etcd": ["https://127.0.0.1:1", "http://127.0.0.1:2"]}, "all http:// or all https://"),
        ({**https, "tls-ca": "pki/missing.pem"}, "tls-ca must name a readable file"),
        ({**https, **ca, "tls-certificate": "pki/client.pem"}, "go together"),
        ({**https, **ca, "tls-server-name": ""}, "tls-server-name"),
    ]:
        with pytest.raises(BootstrapError, match=words):
            from_dict({"redundancy": bad}, base=tmp_path)
    with pytest.raises(RedundancyError, match="expected http://HOST:PORT or https://HOST:PORT"):
        config_from({**https, "etcd": ["grpc://127.0.0.1:1"]}, "[redundancy]")
