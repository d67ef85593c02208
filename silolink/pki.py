"""X.509 for silolink: the coordinator's CA, site and operator certificates, CSRs.

All keys are ECDSA P-256 (fast, small, and accepted by gRPC's BoringSSL on both ends).
Sites make their keys locally and send only a CSR; the CA decides the certificate's
identity from its own records, never from the CSR's subject.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from silolink.errors import InvalidArgument
from silolink.identity import Identity, Role, identity_uri, parse_identity_uri

# Certificates start a little in the past so a site whose clock runs slow can use them;
# never more than a twentieth of their lifetime, so a fresh certificate looks fresh.
CLOCK_SKEW = dt.timedelta(minutes=5)


def _backdate(lifetime: dt.timedelta) -> dt.timedelta:
    return min(CLOCK_SKEW, lifetime / 20)


PrivateKey = ec.EllipticCurvePrivateKey


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def generate_key() -> PrivateKey:
    """A new P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_key(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument("expected an EC private key")
    return key


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as e:
        raise InvalidArgument(f"not a PEM certificate: {e}") from None


def fingerprint(cert: x509.Certificate) -> str:
    """The SHA-256 fingerprint of a certificate's DER encoding, as ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def normalize_fingerprint(text: str) -> str:
    """Accept ``sha256:HEX``, bare hex, or colon-separated hex; return ``sha256:<hex>``."""
    body = text.strip().lower().removeprefix("sha256:").replace(":", "")
    if len(body) != 64 or any(c not in "0123456789abcdef" for c in body):
        raise InvalidArgument("the CA fingerprint must be 64 hex digits, as printed by `cloud-coordinator sites add`")
    return "sha256:" + body


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def identity_of(cert: x509.Certificate) -> Identity | None:
    """The silolink identity a certificate names, or None if it names none."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        parsed = parse_identity_uri(uri)
        if parsed:
            return Identity(parsed[0], parsed[1], serial_hex(cert))
    return None


def issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """True if ``cert`` was signed by ``ca_cert``'s key."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def make_csr(key: PrivateKey, common_name: str) -> bytes:
    """A PEM CSR for ``key``; the subject is informational only."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def load_csr(pem: bytes) -> x509.CertificateSigningRequest:
    """Parse and check a CSR: well-formed, P-256 key, self-signature valid."""
    try:
        csr = x509.load_pem_x509_csr(pem)
        key = csr.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise InvalidArgument("the certificate signing request must be for an EC P-256 key")
        valid = csr.is_signature_valid
    except InvalidArgument:
        raise
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidArgument("the certificate signing request is not a valid PEM CSR") from None
    if not valid:
        raise InvalidArgument("the certificate signing request's signature does not verify")
    return csr


@dataclass(frozen=True)
class CertificateAuthority:
    """The coordinator's CA: signs the server, operator and site certificates."""

    key: PrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, common_name: str, lifetime: dt.timedelta) -> CertificateAuthority:
        key = generate_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = utcnow()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _backdate(lifetime))
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert)

    def issue_server(self, hostnames: list[str], lifetime: dt.timedelta) -> tuple[PrivateKey, x509.Certificate]:
        """A TLS server key and certificate valid for ``hostnames`` (names or IPs)."""
        key = generate_key()
        names: list[x509.GeneralName] = []
        for host in dict.fromkeys(hostnames):
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = self._leaf(key.public_key(), hostnames[0], lifetime, ExtendedKeyUsageOID.SERVER_AUTH)
        return key, builder.add_extension(x509.SubjectAlternativeName(names), critical=False).sign(
            self.key, hashes.SHA256()
        )

    def issue_client(
        self, public_key: ec.EllipticCurvePublicKey, role: Role, name: str, lifetime: dt.timedelta
    ) -> x509.Certificate:
        """A client certificate naming ``name`` in ``role`` for ``public_key``."""
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity_uri(role, name))])
        builder = self._leaf(public_key, name, lifetime, ExtendedKeyUsageOID.CLIENT_AUTH)
        return builder.add_extension(san, critical=False).sign(self.key, hashes.SHA256())

    def sign_csr(self, csr_pem: bytes, role: Role, name: str, lifetime: dt.timedelta) -> x509.Certificate:
        """Check ``csr_pem`` and issue a client certificate for its key."""
        csr = load_csr(csr_pem)
        return self.issue_client(csr.public_key(), role, name, lifetime)  # type: ignore[arg-type]

    def _leaf(self, public_key, common_name: str, lifetime: dt.timedelta, usage) -> x509.CertificateBuilder:
        now = utcnow()
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _backdate(lifetime))
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
