"""tuneforge's errors: one hierarchy, each with a machine-readable `code`.

The library core raises these; only `api.errors` turns them into HTTP responses.
"""

from __future__ import annotations

from typing import Any


class TuneforgeError(Exception):
    """Base error. `code` is stable and machine-readable; `param` names the offending field."""

    code = "internal"

    def __init__(self, message: str, *, param: str | None = None, details: Any = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message, "param": self.param}
        if self.details is not None:
            body["details"] = self.details
        return body


class InvalidRequestError(TuneforgeError):
    code = "invalid_request"


class NotFoundError(TuneforgeError):
    code = "not_found"


class FileNotFoundInStoreError(NotFoundError):
    code = "file_not_found"


class JobNotFoundError(NotFoundError):
    code = "job_not_found"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class RemoteCodeRefusedError(InvalidRequestError):
    """The model would run its own code when loaded; tuneforge never does."""

    code = "remote_code_refused"


class UnsafeWeightsError(InvalidRequestError):
    """The model's weights exist only as pickles, which can run code when loaded."""

    code = "unsafe_weights"


class UnsupportedFileError(InvalidRequestError):
    """An upload tuneforge does not take (an archive or compressed file)."""

    code = "unsupported_file"


class InvalidDatasetError(TuneforgeError):
    code = "invalid_dataset"


class FileTooLargeError(TuneforgeError):
    code = "file_too_large"


class InvalidStateError(TuneforgeError):
    """A state change was asked for that the job's current status does not allow."""

    code = "invalid_state"


class JobTimeoutError(TuneforgeError):
    code = "timeout"


class JobCancelledError(TuneforgeError):
    code = "cancelled"


class OutOfMemoryError(TuneforgeError):
    code = "out_of_memory"


class DiskFullError(TuneforgeError):
    code = "disk_full"


class LeaseLostError(TuneforgeError):
    """This process's claim on a job was taken over: it may no longer change the job."""

    code = "lease_lost"


class StudyNotFoundError(NotFoundError):
    code = "study_not_found"
