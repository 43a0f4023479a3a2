"""Batched uploads over httpx: files streamed from disk, requests governed, every item accounted for.

```python
import httpx
from aiogovernor.uploads import upload_files

async with httpx.AsyncClient() as client:
    report = await upload_files(client, paths, url="https://api.example.com/upload",
                                manifest="upload-manifest.jsonl")
for failure in report.failed:
    print(failure.key, failure.reason)
```

Needs the ``httpx`` and ``files`` extras (``rich`` for the progress bar).
"""

from __future__ import annotations

try:  # checked first so that a missing extra reads as an install line, not a traceback into httpx
    import httpx as _httpx  # noqa: F401
except ImportError as exc:
    raise ImportError("aiogovernor.uploads needs httpx: pip install 'aiogovernor[httpx]'") from exc

from aiogovernor._chunking import Chunker as Chunker

from ._items import ItemReadError as ItemReadError
from ._items import ItemResult as ItemResult
from ._items import ItemStatus as ItemStatus
from ._items import UploadItem as UploadItem
from ._items import UploadReport as UploadReport
from ._manifest import Manifest as Manifest
from ._manifest import ManifestError as ManifestError
from ._multipart import MultipartBody as MultipartBody
from ._uploader import DEFAULT_RETRY as DEFAULT_RETRY
from ._uploader import RequestBuilder as RequestBuilder
from ._uploader import UploadBatch as UploadBatch
from ._uploader import UploadOptions as UploadOptions
from ._uploader import upload_files as upload_files
from ._uploader import upload_items as upload_items

__all__ = [
    "Chunker",
    "DEFAULT_RETRY",
    "ItemReadError",
    "ItemResult",
    "ItemStatus",
    "Manifest",
    "ManifestError",
    "MultipartBody",
    "RequestBuilder",
    "UploadBatch",
    "UploadItem",
    "UploadOptions",
    "UploadReport",
    "upload_files",
    "upload_items",
]


def __getattr__(name: str) -> object:
    if name == "UploadProgress":
        # Imported here, on the deprecated path only.
        import warnings

        from ._progress import UploadProgress

        warnings.warn(
            "aiogovernor.uploads.UploadProgress is deprecated: pass progress=True (a rich bar) or a "
            "callback receiving aiogovernor.Progress to upload_files/upload_items",
            DeprecationWarning,
            stacklevel=2,
        )
        return UploadProgress
    raise AttributeError(f"module 'aiogovernor.uploads' has no attribute {name!r}")
