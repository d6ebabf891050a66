"""`python -m tuneforge.cli`: the `tuneforge` command (tests and the worker start the server
this way)."""

from tuneforge.cli import app

if __name__ == "__main__":
    app()
