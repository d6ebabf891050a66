"""Which language a text is in, with langdetect (a port of Google's language-detection).

langdetect samples n-grams at random; its factory is seeded here once, so the same text gets
the same answer every time. Texts without letters enough to tell come back as `unknown`.
"""

from __future__ import annotations

import threading

UNKNOWN = "unknown"
MIN_LETTERS = 3
_lock = threading.Lock()
_seeded = False


def detect_language(text: str) -> str:
    """The ISO 639-1 code of `text`'s language (`zh-cn`, `zh-tw` for Chinese), or `unknown`."""
    global _seeded
    from langdetect import DetectorFactory, detect
    from langdetect.lang_detect_exception import LangDetectException

    if sum(c.isalpha() for c in text) < MIN_LETTERS:
        return UNKNOWN
    with _lock:  # the factory and its seed are shared by the process
        if not _seeded:
            DetectorFactory.seed = 0
            _seeded = True
        try:
            return str(detect(text))
        except LangDetectException:
            return UNKNOWN
