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


class FieldValueError(ValueError):
    """A model validator's ValueError about one field (pydantic reports a model validator's
    error at the model, not at a field): the API's validation errors name `param`."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


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


class QuantizationUnavailableError(TuneforgeError):
    """4-bit or 8-bit loading was asked for where it cannot run: no CUDA GPU, or no
    bitsandbytes. A request error (422), told at job creation."""

    code = "validation_error"


class SpecValidationError(TuneforgeError):
    """A job request that parsed, but whose settled form is invalid (its method chosen from
    the data, OpenAI's top-level hyperparameters moved into it): a request error (422) like
    any other field error."""

    code = "validation_error"


class UnsupportedModelError(InvalidRequestError):
    """The model cannot be written as GGUF (architecture, tokenizer or rope scaling)."""


class UnsupportedArchitectureError(InvalidRequestError):
    """A model to import whose architecture the installed transformers cannot read."""

    code = "unsupported_architecture"


class ModelExistsError(TuneforgeError):
    """A model (or an import under way) already has the name asked for."""

    code = "model_exists"


class TemplateError(InvalidRequestError):
    """The chat template cannot be written as an Ollama TEMPLATE (not jinja2's error of the
    same name)."""


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


class InsufficientMemoryError(InvalidRequestError):
    """A job whose memory estimate does not fit the worker's device (400, at creation)."""

    code = "insufficient_memory"


class InsufficientDiskError(InvalidRequestError):
    """A job whose disk estimate does not fit the data folder's free space (400)."""

    code = "insufficient_disk"


class QueueFullError(TuneforgeError):
    """The API key already has as many jobs waiting to run as it may (429)."""

    code = "queue_full"


class LeaseLostError(TuneforgeError):
    """This process's claim on a job was taken over: it may no longer change the job."""

    code = "lease_lost"


class StudyNotFoundError(NotFoundError):
    code = "study_not_found"


class EndpointError(TuneforgeError):
    """The OpenAI-compatible server could not be reached or refused a request."""

    code = "endpoint_error"


class QuantizationError(TuneforgeError):
    """llama.cpp could not quantize a GGUF file."""

    code = "export_failed"


class VerificationError(TuneforgeError):
    """The exported file does not behave like the model; the export fails with the reason."""

    code = "export_verification_failed"


class DeploymentError(TuneforgeError):
    """A deployment's target was unreachable, refused, or failed its health check."""

    code = "deployment_failed"


class PythonGradersDisabledError(TuneforgeError):
    """A python grader, on a server whose operator has not turned them on (403)."""

    code = "python_graders_disabled"
