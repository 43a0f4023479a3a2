"""The governor for threads and process pools: synchronous code gets the same adaptive concurrency.

```python
from aiogovernor import sync

gov = sync.Governor("uploads")          # the same arguments as aiogovernor.Governor
with gov:                                # in any thread
    upload(item)

results = sync.governed_map(upload, items, governor=gov)   # worker threads, at most gov.limit at once

@gov.guard                               # a permit per call
def upload(item): ...

results = sync.governed_process_map(crunch, items)         # Pool.map(chunksize=), adapted
```

The thread gate shares the async gate's feedback loop, policies, windows,
decisions, classifier, time gates and learned state (see `Governor`); only
the waiting differs: threads block, in arrival order.
"""

from __future__ import annotations

from ._gate import Governor as Governor
from ._gate import Permit as Permit
from ._map import ThreadMapOptions as ThreadMapOptions
from ._map import governed_batches as governed_batches
from ._map import governed_imap as governed_imap
from ._map import governed_imap_unordered as governed_imap_unordered
from ._map import governed_map as governed_map
from ._processes import governed_process_map as governed_process_map

__all__ = [
    "Governor",
    "Permit",
    "ThreadMapOptions",
    "governed_batches",
    "governed_imap",
    "governed_imap_unordered",
    "governed_map",
    "governed_process_map",
]
