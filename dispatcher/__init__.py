"""dispatcher: delivers approved Community Requests to the residents inside their area.

The publishing pipeline calls :func:`dispatcher.publish`; everything else runs in dramatiq workers.
"""

from __future__ import annotations

from typing import Any

__all__ = ["publish"]
__version__ = "0.1.0"


def publish(request: Any) -> str:
    """Validate a Community Request and enqueue it for distribution; return its id.

    Imported lazily so that ``import dispatcher`` stays cheap for the pipeline.
    """
    from dispatcher.publishing import publish as _publish

    return _publish(request)
