"""``ferry-runtime fetch URI DIR``: model URIs (file, http(s), s3) into a model directory.

Modules: ``uri`` (pure parsing), ``http`` and ``s3`` (sources), ``local`` (file:// copies),
``archive`` (safe unpacking and size limits), ``placement`` (staging, atomic install and the
``.ferry-complete`` marker), ``core`` (``fetch_model``).
"""

from ferry_runtime.fetch.archive import FetchLimits
from ferry_runtime.fetch.core import FetchInterruptedError, fetch_model
from ferry_runtime.fetch.errors import FetchError
from ferry_runtime.fetch.retry import RetryPolicy

__all__ = ["FetchError", "FetchInterruptedError", "FetchLimits", "RetryPolicy", "fetch_model"]
