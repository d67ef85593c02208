import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from silolink import errors, pki
from silolink.identity import Role

DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def ca():
    return pki.CertificateAuthority.create("test CA", DAY)


def test_signed_csr_names_the_identity_the_ca_chose_not_the_csr_subject(ca):
    key = pki.generate_key()
    cert = ca.sign_csr(pki.make_csr(key, "operator-admin-please"), Role.AGENT, "hospital-a", DAY)
    identity = pki.identity_of(cert)
    assert identity.role is Role.AGENT and identity.name == "hospital-a"
    assert identity.serial == pki.serial_hex(cert)
    assert pki.issued_by(cert, ca.cert)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()


def test_certificate_from_another_ca_is_not_issued_by_ours(ca):
    other = pki.CertificateAuthority.create("other CA", DAY)
    cert = other.issue_client(pki.generate_key().public_key(), Role.AGENT, "hospital-a", DAY)
    assert not pki.issued_by(cert, ca.cert)


def test_tampered_csr_is_refused(ca):
    pem = pki.make_csr(pki.generate_key(), "x")
    broken = pem.replace(pem[80:84], b"AAAA")
    with pytest.raises(errors.InvalidArgument):
        ca.sign_csr(broken, Role.AGENT, "hospital-a", DAY)
    with pytest.raises(errors.InvalidArgument, match="not a valid PEM CSR"):
        ca.sign_csr(b"hello", Role.AGENT, "hospital-a", DAY)


def test_csr_for_a_non_p256_key_is_refused(ca):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives import serialization

    with pytest.raises(errors.InvalidArgument, match="P-256"):
        ca.sign_csr(csr.public_bytes(serialization.Encoding.PEM), Role.AGENT, "hospital-a", DAY)


def test_server_certificate_covers_names_and_ips(ca):
    _, cert = ca.issue_server(["coord.example.org", "10.0.0.5", "localhost"], DAY)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"coord.example.org", "localhost"}
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert pki.identity_of(cert) is None


def test_fingerprint_normalisation_accepts_common_spellings(ca):
    fp = ca.fingerprint
    hexpart = fp.removeprefix("sha256:")
    colons = ":".join(hexpart[i : i + 2] for i in range(0, 64, 2)).upper()
    assert pki.normalize_fingerprint(hexpart) == fp
    assert pki.normalize_fingerprint(colons) == fp
    with pytest.raises(errors.InvalidArgument):
        pki.normalize_fingerprint("sha256:1234")


def test_bad_site_names_are_refused(ca):
    for name in ["", "A", "-x", "x-", "has space", "a" * 64, "UPPER"]:
        with pytest.raises(errors.InvalidArgument):
            ca.issue_client(pki.generate_key().public_key(), Role.AGENT, name, DAY)
