"""The job engine: statuses, the queue's service functions, the worker and the job process."""
