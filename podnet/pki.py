"""The cluster's TLS: a CA and an API server certificate, made on first start.

Why TLS at all on loopback: kubectl (client-go) sends a kubeconfig's bearer token only over
TLS (kubernetes/kubectl#744), so an API that requires a token must serve HTTPS, with the CA in
the kubeconfig as every real cluster does.

Agents hold only the cluster secret, not the CA. They learn the CA like `kubeadm join` learns
it from the signed cluster-info: `GET /podnet/cluster-info` (no auth) returns the CA and the
cluster's addressing (cluster CIDR, service CIDR, domain) with an HMAC over all of it under
the cluster secret; an agent accepts it only if the HMAC verifies, then pins the CA for every
later request. A man in the middle without the secret cannot forge it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_DAYS = 3650


class PkiError(Exception):
    pass


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _san(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):  # de-duplicate, keep order
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _cert(subject: str, public: ec.EllipticCurvePublicKey, issuer: x509.Name,
          signer: ec.EllipticCurvePrivateKey, *, ca: bool,
          hosts: list[str] | None = None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer).public_key(public)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName(_san(hosts or [])),
                                        critical=False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def ensure_pki(directory: Path, hosts: list[str]) -> tuple[Path, Path, bytes]:
    """CA and server certificate in `directory`; returns (cert, key, CA PEM).

    The CA is made once and kept. The server certificate is made again when the names it
    must cover (`hosts`, plus 127.0.0.1 and localhost) are not all in it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_crt, ca_key = directory / "ca.crt", directory / "ca.key"
    crt, key = directory / "apiserver.crt", directory / "apiserver.key"
    wanted = ["127.0.0.1", "localhost", *[h for h in hosts if h and h != "0.0.0.0"]]
    try:
        if ca_crt.exists() and ca_key.exists():
            ca_cert = x509.load_pem_x509_certificate(ca_crt.read_bytes())
            loaded = serialization.load_pem_private_key(ca_key.read_bytes(), None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise PkiError(f"{ca_key} is not an EC key")
            ca_private = loaded
        else:
            ca_private = ec.generate_private_key(ec.SECP256R1())
            ca_cert = _cert("podnet-ca", ca_private.public_key(),
                            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "podnet-ca")]),
                            ca_private, ca=True)
            _write_private(ca_key, _key_pem(ca_private))
            ca_crt.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
            crt.unlink(missing_ok=True)
        if crt.exists() and key.exists() and _covers(crt, wanted):
            return crt, key, ca_crt.read_bytes()
        server_key = ec.generate_private_key(ec.SECP256R1())
        server = _cert("podnet-apiserver", server_key.public_key(), ca_cert.subject, ca_private,
                       ca=False, hosts=wanted)
        _write_private(key, _key_pem(server_key))
        crt.write_bytes(server.public_bytes(serialization.Encoding.PEM))
        return crt, key, ca_crt.read_bytes()
    except (OSError, ValueError) as e:
        raise PkiError(f"cannot prepare TLS certificates in {directory}: {e}") from None


def _covers(crt: Path, hosts: list[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    have = {str(n.value) for n in san}
    return all(h in have for h in hosts)


def server_context(crt: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(crt, key)
    return ctx


def client_context(ca_pem: bytes) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca_pem.decode())


def _canonical(info: dict[str, object]) -> bytes:
    return json.dumps({k: v for k, v in info.items() if k != "mac"}, sort_keys=True,
                      separators=(",", ":")).encode()


def sign_cluster_info(secret: bytes, info: dict[str, object]) -> dict[str, object]:
    """`info` (the CA and the cluster's addressing) with an HMAC proving that a holder of the
    cluster secret vouches for all of it."""
    mac = hmac.new(secret, b"podnet/cluster-info\0" + _canonical(info), hashlib.sha256)
    return {**info, "mac": mac.hexdigest()}


def verify_cluster_info(secret: bytes, info: dict[str, object]) -> bool:
    mac = info.get("mac")
    if not isinstance(mac, str):
        return False
    expected = hmac.new(secret, b"podnet/cluster-info\0" + _canonical(info), hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), mac)
