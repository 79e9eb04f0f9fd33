"""The errors of OpenPGP: one class for each kind a caller tells apart, a `reason` code within it.

Messages are one line, for logs, the command line and API errors; they never carry key material
or plaintext. `GpgUnavailable` is a `TransientError` (451 during DATA, a retried job after it);
every other error here is an `OpenPgpError`.
"""

from __future__ import annotations

from typing import Literal

from storage.errors import TransientError


class OpenPgpError(Exception):
    """Base of the OpenPGP errors (except `GpgUnavailable`, a transient storage error)."""


class GpgUnavailable(TransientError):
    """gpg is missing, failing, or past its time limit: the same call may succeed later."""


class GpgTimedOut(GpgUnavailable):
    """gpg ran past its time limit; its whole process group was killed."""


Refusal = Literal["not_a_key", "binary", "too_large", "several_keys", "private", "revoked",
                  "expired", "invalid", "cannot_encrypt", "not_imported"]

_REFUSALS: dict[Refusal, str] = {
    "not_a_key": "not an OpenPGP public key",
    "binary": "armored key expected (this is binary)",
    "too_large": "key too large",
    "several_keys": "several keys: give exactly one public key",
    "private": "a private key: give the public key only",
    "revoked": "the key is revoked",
    "expired": "the key has expired",
    "invalid": "the key is invalid",
    "cannot_encrypt": "no valid encryption key or subkey (a signing-only key?)",
    "not_imported": "gpg would not import the key",
}


class KeyRefused(OpenPgpError):
    """A key that cannot serve as an agent's key: `reason` names the rule it breaks."""

    def __init__(self, reason: Refusal, message: str | None = None) -> None:
        super().__init__(message or _REFUSALS[reason])
        self.reason: Refusal = reason


class NotAFingerprint(OpenPgpError):
    """A recipient or an expected signer that is not a 40-digit key fingerprint."""


RecipientProblem = Literal["not_in_keyring", "no_encryption_key", "revoked", "expired",
                           "disabled", "unusable"]

# INV_RECP reason codes (gnupg doc/DETAILS) a recipient can meet in practice.
_INVALID_RECIPIENT: dict[str, tuple[RecipientProblem, str]] = {
    "1": ("not_in_keyring", "not in the keyring"),
    "3": ("no_encryption_key", "has no encryption key"),
    "4": ("revoked", "is revoked"), "5": ("expired", "has expired"),
    "13": ("disabled", "is disabled"),
}


class RecipientRefused(OpenPgpError):
    """gpg would not encrypt to `recipient` (a fingerprint, when gpg names it): `reason` why."""

    def __init__(self, code: str | None, recipient: str | None) -> None:
        self.reason, says = _INVALID_RECIPIENT.get(code or "", ("unusable", "cannot be used"))
        self.recipient = recipient
        super().__init__(f"recipient {recipient or 'a recipient'} {says}")


DecryptionProblem = Literal["wrong_passphrase", "passphrase_needed", "not_for_this_key",
                            "not_encrypted", "damaged"]

_DECRYPTION_PROBLEMS: dict[DecryptionProblem, str] = {
    "wrong_passphrase": "wrong passphrase for the private key",
    "passphrase_needed": "the private key is protected: a passphrase is needed",
    "not_for_this_key": "the message is not encrypted to this key",
    "not_encrypted": "not an OpenPGP encrypted message",
    "damaged": "the message is damaged",
}


class DecryptionFailed(OpenPgpError):
    """A message the decryptor could not open: `reason` says why."""

    def __init__(self, reason: DecryptionProblem) -> None:
        super().__init__(f"cannot decrypt: {_DECRYPTION_PROBLEMS[reason]}")
        self.reason: DecryptionProblem = reason


class NoPrivateKey(OpenPgpError):
    """The key material given to a decryptor holds no private key."""


class DecryptorClosed(OpenPgpError):
    """The decryptor was used after `close`."""
