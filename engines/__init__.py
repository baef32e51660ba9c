"""Everything that turns (portrait image, speech audio) into video frames, and the frames into an MP4."""

from pathlib import Path

SAMPLES = Path(__file__).resolve().parent / "samples"  # the sample portrait.jpg + speech.wav shipped in the wheel
