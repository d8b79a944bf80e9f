"""The one error base of CiviCRM and CMS errors (no Airflow import)."""

from __future__ import annotations


class ProvisioningError(Exception):
    """Base of every CiviCRM and CMS error: what failed, never a secret.

    `retryable` says whether repeating the same call may succeed (the transport retries such errors
    of idempotent calls only); `retry_after` is the server's hint in seconds. Picklable whatever a
    subclass's constructor looks like, so an error survives being passed between processes.
    """

    retryable = False

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        return (_rebuild_error, (type(self), self.args, dict(self.__dict__)))


def _rebuild_error(cls, args, state):
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


