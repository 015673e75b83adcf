"""Recording's web face: the recording API, VOD pages and signed links (the recorder
itself, recorder.RecordingManager, knows nothing of HTTP)."""

from __future__ import annotations

from .service import RECORDER, with_urls

__all__ = ["RECORDER", "with_urls"]
