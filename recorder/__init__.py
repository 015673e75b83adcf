"""Recording: fragmented MP4 segments, final MP4, screenshots, retention."""
