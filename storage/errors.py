"""Our own error types: every library exception is translated into one of these at one boundary.

`TransientError` means "try again later" (SMTP 451, a retried job, HTTP 503); `PermanentError`
means retrying cannot help (a recorded failure). Nothing outside `storage/` catches a botocore,
SQLAlchemy or OS exception type.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of the errors `storage/` raises."""


class TransientError(StorageError):
    """The store or database did not answer as it should; the same call may succeed later."""


class DatabaseError(TransientError):
    """A database statement failed in a way a later try may not (a conflict, a constraint the
    caller did not expect, a driver error): raised by `storage.db.translated_errors`."""


class DatabaseUnavailable(DatabaseError):
    """The database as a whole did not answer (a lost connection, no pool connection, a lock
    wait or a statement past its timeout, a server shutting down): whatever the statement."""


class ObjectStoreUnavailable(TransientError):
    """The object store did not answer as it should: S3 unreachable or refusing, the local
    store's disk full, read-only or failing; the same call may succeed later."""


class PermanentError(StorageError):
    """The request itself is wrong (bad key, missing object); retrying will not help."""


class SchemaMismatch(PermanentError):
    """The database's schema is not the one this version needs, and could not be made so."""


class ObjectNotFound(PermanentError):
    """No object under that key."""


class InvalidKey(PermanentError):
    """A key that is not one of ours, or that would escape the store's root."""
