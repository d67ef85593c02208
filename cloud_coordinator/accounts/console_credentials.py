"""The web console's own certificate (``silolink://console/console``).

It lets the console call ConsoleSessionService, and act for an account only with a session
that a login opened. Issued afresh each time the coordinator starts a console: the key lives only in the
coordinator's memory, the certificate is recorded so the per-call serial check knows it, and
the console certificates of earlier runs are refused from then on.
"""

from __future__ import annotations

import datetime as dt

from silolink import pki
from silolink.identity import Role
from silolink.rpc.channels import Credentials

CONSOLE_NAME = "console"
LIFETIME = dt.timedelta(days=30)


def issue_console_credentials(ca: pki.CertificateAuthority, sites) -> Credentials:
    """A new key and certificate for the console, recorded with ``sites`` (SiteService)."""
    key = pki.generate_key()
    cert = ca.issue_client(key.public_key(), Role.CONSOLE, CONSOLE_NAME, LIFETIME)
    sites.revoke_certificates_of(Role.CONSOLE, CONSOLE_NAME)
    sites.record_certificate(cert, Role.CONSOLE, CONSOLE_NAME)
    return Credentials(pki.cert_to_pem(ca.cert), pki.cert_to_pem(cert), pki.key_to_pem(key))
