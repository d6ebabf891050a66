"""The API's answers: one module per resource (as `api/routes/`), each with its Public schema
family and the serialiser that builds it from a stored row.

Request bodies stay beside the service that takes them (`JobCreate`, `ExportCreate`, …): the
CLI and the stored jobs read them too. What is here is only what the API answers."""
