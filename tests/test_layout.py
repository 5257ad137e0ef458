"""The pinned CA bundle installed as certs.pem."""

from __future__ import annotations

import hashlib

import pytest
from cryptography import x509

from packager.layout import CA_BUNDLE, CA_BUNDLE_SHA256


# Mozilla's bundle still holds a root with a non-positive serial number, which cryptography warns on.
@pytest.mark.filterwarnings("ignore:Parsed a serial number")
def test_ca_bundle_is_the_pinned_one() -> None:
    """certs.pem never drifts with the host (scripts/update_certs.py refreshes both)."""
    data = CA_BUNDLE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == CA_BUNDLE_SHA256
    certs = x509.load_pem_x509_certificates(data)
    assert len(certs) == data.count(b"-----BEGIN CERTIFICATE-----") > 100
