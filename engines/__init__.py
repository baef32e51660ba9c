"""Everything that turns (portrait image, speech audio) into video frames, and the frames into an MP4."""
