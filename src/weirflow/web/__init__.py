"""The dashboard and REST API over a running job, and the observer that feeds them.

``weirflow.web.app`` (the starlette application) needs the ``web`` extra;
:class:`JobObserver` does not.
"""

from weirflow.web.observe import JobObserver

__all__ = ["JobObserver"]
