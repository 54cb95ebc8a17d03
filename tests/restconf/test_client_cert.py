"""RESTCONF client certificates (RFC 8040 §2.5): a certificate signed by the configured CA logs in
as the bootstrap user named by its common name (with that user's NACM groups); one from another CA
is refused in the TLS handshake; without a certificate, HTTP Basic still works."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from rc_server import CURL, RestconfServer, curl, make_config
from test_restconf import JSON, KEY, VR, mn_body, seed


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key, issuer: str, issuer_key, *, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


def _write(path: Path, cert: x509.Certificate, key=None) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.with_suffix(".key").write_bytes(pem)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for ca_name in ("ca", "rogue"):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        _write(tmp_path / f"{ca_name}.pem", _cert(ca_name, ca_key, ca_name, ca_key, ca=True))
        key = ec.generate_private_key(ec.SECP256R1())
        _write(tmp_path / f"{ca_name}-operator.pem", _cert("operator", key, ca_name, ca_key, ca=False), key)
        out[ca_name] = tmp_path / f"{ca_name}.pem"
        out[f"{ca_name}-operator"] = tmp_path / f"{ca_name}-operator.pem"
    return out


def test_client_certificate_logs_in_as_its_common_name(tmp_path, rc_hashes, rc_pub, pki):
    srv = RestconfServer(
        make_config(tmp_path / "state", tmp_path / "hostkey", rc_hashes, rc_pub), client_ca=pki["ca"]
    )
    try:
        seed(srv)  # Basic (admin) without a certificate still works
        assert curl(srv, "POST", VR, mn_body("mn1", "10.0.0.1", KEY), ctype=JSON).status == 201

        def with_cert(which: str, path: str) -> subprocess.CompletedProcess:
            cert = pki[which]
            args = [
                CURL,
                "-sS",
                "--cacert",
                str(srv.cert),
                "--cert",
                str(cert),
                "--key",
                str(cert.with_suffix(".key")),
            ]
            return subprocess.run(
                [*args, "-w", "\n%{http_code}", srv.base + path], capture_output=True, timeout=30
            )

        ok = with_cert("ca-operator", f"{VR}/mobile-node=mn1")
        assert ok.returncode == 0 and ok.stdout.endswith(b"\n200"), ok
        assert b"spi" in ok.stdout and KEY.encode() not in ok.stdout  # NACM of user operator
        rogue = with_cert("rogue-operator", f"{VR}/mobile-node=mn1")
        assert rogue.returncode != 0  # the handshake refuses a certificate of another CA
    finally:
        srv.stop()
