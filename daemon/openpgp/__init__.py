"""OpenPGP (SPEC §8): agents' public keys, encryption at rest, PGP/MIME signature checks, and
the client's decryption, over the machine's gpg (python-gnupg)."""

from daemon.openpgp.at_rest import OpenPgp, read_public_key
from daemon.openpgp.gpg import Decryptor, GpgUnavailable, OpenPgpError, gpg_version

__all__ = [
    "Decryptor",
    "GpgUnavailable",
    "OpenPgp",
    "OpenPgpError",
    "gpg_version",
    "read_public_key",
]
