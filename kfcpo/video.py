"""Write rendered frames to an MP4 or a GIF, chosen by the file's extension."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import imageio.v2 as imageio
import numpy as np

VIDEO_SUFFIXES = (".mp4", ".gif")
# MP4 frames stream to ffmpeg, so memory stays flat: the cap only bounds file size and
# render time (three full navigation episodes).
MAX_VIDEO_FRAMES = 3000
# Pillow keeps every GIF frame in memory until the file closes (256x256 RGB: ~200 MB
# for 1000 frames), so GIFs get a lower cap: one full navigation episode.
MAX_GIF_FRAMES = 1000
# GIF stores frame durations in 1/100 s, and browsers play frames shorter than 20 ms
# at 100 ms: round to 10 ms, at least 20.
GIF_MIN_FRAME_MS = 20


def check_video_path(path: str | Path) -> Path:
    """The path as a Path; ValueError for an extension we cannot write."""
    p = Path(path)
    if p.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"'{path}' must end in one of {', '.join(VIDEO_SUFFIXES)}")
    return p


def gif_frame_ms(fps: float) -> int:
    """The duration of one GIF frame for a target rate, as GIF can store it."""
    return max(GIF_MIN_FRAME_MS, 10 * round(100 / fps))


class VideoWriter:
    """Append frames until a cap; `frames` counts what was written.

    A GIF merges identical consecutive frames into one longer frame (Pillow does),
    so read a GIF's length back as total duration / `frame_ms`, not as its frame count.
    """

    def __init__(self, path: str | Path, fps: float, max_frames: int | None = None) -> None:
        self.path = check_video_path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        gif = self.path.suffix.lower() == ".gif"
        cap = MAX_GIF_FRAMES if gif else MAX_VIDEO_FRAMES
        self.max_frames = cap if max_frames is None else min(max_frames, cap)
        self.frames = 0
        self.dropped = 0  # frames the caller skipped because the cap was reached
        kwargs: dict[str, Any]
        if gif:
            self.frame_ms = gif_frame_ms(fps)
            kwargs = {"mode": "I", "duration": self.frame_ms, "loop": 0}
        else:
            self.frame_ms = 1000 / fps
            # 16-pixel macro blocks suit H.264; quiet ffmpeg unless it fails.
            kwargs = {"fps": fps, "macro_block_size": 16, "ffmpeg_log_level": "error"}
        self._writer = imageio.get_writer(self.path, **kwargs)

    @property
    def full(self) -> bool:
        """True once `max_frames` frames are written."""
        return self.frames >= self.max_frames

    def append(self, frame: np.ndarray) -> bool:
        """Write one RGB frame; False (and nothing written) once the cap is reached."""
        if self.full:
            return False
        self._writer.append_data(np.asarray(frame, dtype=np.uint8))
        self.frames += 1
        return True

    def close(self) -> None:
        """Finish and close the file."""
        self._writer.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
