"""Uploads tuneforge refuses: archives and compressed files.

Training data comes as JSONL, CSV or Parquet. tuneforge never unpacks an upload, so there is
no archive member whose name could climb out of the data folder (`../evil`), no link to
follow and no zip bomb to inflate: such files are refused by their first bytes, whatever
their name says, before the rest of the body is stored.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from tuneforge.errors import UnsupportedFileError

# Leading bytes of the archive and compression formats (Parquet starts with `PAR1`).
MAGIC = {
    b"PK\x03\x04": "zip",
    b"PK\x05\x06": "zip",
    b"PK\x07\x08": "zip",
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"(\xb5/\xfd": "zstandard",
    b"7z\xbc\xaf\x27\x1c": "7z",
    b"Rar!\x1a\x07": "rar",
    b"\x04\x22\x4d\x18": "lz4",
}
TAR_MAGIC_OFFSET = 257  # "ustar" in a tar header


def archive_format(head: bytes) -> str | None:
    """The archive or compression format that `head` (a file's first bytes) starts, if any."""
    for magic, name in MAGIC.items():
        if head.startswith(magic):
            return name
    if head[TAR_MAGIC_OFFSET : TAR_MAGIC_OFFSET + 5] == b"ustar":
        return "tar"
    return None


def refuse_archive(head: bytes) -> None:
    """Raise UnsupportedFileError when `head` starts an archive or a compressed file."""
    found = archive_format(head)
    if found is not None:
        raise UnsupportedFileError(
            f"The file is a {found} archive or compressed file; tuneforge takes JSONL, CSV or "
            "Parquet files as they are and never unpacks uploads. Unpack it and upload the "
            "data file itself.",
            param="file",
        )


# A file name is a label: its last component, without control characters, at most this long.
MAX_NAME = 255


def file_label(filename: str) -> str:
    """The label kept for an uploaded file's name: its last component, control characters
    removed, cut to MAX_NAME characters with its extension kept (`a…a.jsonl`)."""
    name = "".join(c for c in filename.replace("\\", "/") if c.isprintable())
    path = PurePosixPath(name.rsplit("/", 1)[-1])
    suffix = path.suffix if len(path.suffix) < MAX_NAME // 2 else ""
    stem = path.name[: len(path.name) - len(suffix)]
    return (stem[: MAX_NAME - len(suffix)] + suffix).strip() or "upload"
