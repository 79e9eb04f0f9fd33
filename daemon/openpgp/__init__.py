"""OpenPGP (SPEC §8): agents' public keys, encryption at rest, PGP/MIME signature checks, and
the client's decryption, over the machine's gpg (python-gnupg).

`runner` runs gpg bounded in time, `keys` reads and checks keys, `keyring` is the daemon's
keyring of public keys, `at_rest` the daemon's service over it, `decrypt` and `encrypt` the
client's side.
"""

from daemon.openpgp.at_rest import OpenPgp, read_public_key
from daemon.openpgp.decrypt import Decryptor
from daemon.openpgp.encrypt import Encryptor
from daemon.openpgp.errors import GpgUnavailable, OpenPgpError
from daemon.openpgp.runner import gpg_version

__all__ = [
    "Decryptor",
    "Encryptor",
    "GpgUnavailable",
    "OpenPgp",
    "OpenPgpError",
    "gpg_version",
    "read_public_key",
]
