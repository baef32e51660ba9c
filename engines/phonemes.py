"""Phone recognition with the English acoustic model and phone language model bundled in `pocketsphinx`.

It gives *when* each phone is spoken (10 ms resolution), which tells lip shape (rounded "oo", spread "ee",
closed "m/b/p") far better than loudness alone. It is English-trained; on other languages the phones are
approximate, and the mouth track leans on the energy envelope for timing either way.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

PHONE_HOP_SECONDS = 0.01  # pocketsphinx frames are 10 ms

_local = threading.local()


@dataclass(frozen=True)
class Phone:
    label: str  # ARPAbet without stress, or "SIL"
    start: float  # seconds
    end: float  # seconds


def _decoder():
    """One decoder per thread: pocketsphinx decoders are not thread-safe, and building one costs ~0.1 s."""
    decoder = getattr(_local, "decoder", None)
    if decoder is None:
        from pocketsphinx import Decoder, get_model_path

        model_dir = get_model_path()
        decoder = Decoder(
            hmm=os.path.join(model_dir, "en-us", "en-us"),
            allphone=os.path.join(model_dir, "en-us", "en-us-phone.lm.bin"),
            lw=2.0, pip=0.3, beam=1e-10, pbeam=1e-10, loglevel="FATAL",
            cmn="batch",  # per-utterance normalisation: the same audio always gives the same phones
        )
        # The model's feat.params turns on noise removal, whose noise estimate carries over from one utterance
        # to the next: phones (and so the video) would depend on what this thread decoded before. Off, a job
        # renders the same bytes whatever ran before it (tests/test_mouth_track.py). Pauses are still
        # gated by loudness. (A keyword argument is overridden by feat.params; reinit_feat applies it.)
        decoder.config["remove_noise"] = False
        decoder.reinit_feat(decoder.config)
        _local.decoder = decoder
        _local.initial_cmn = decoder.get_cmn()
    # Cepstral mean normalisation carries over between utterances; restoring its start value makes the
    # same audio give the same phones however many jobs this thread decoded before.
    decoder.set_cmn(_local.initial_cmn)
    return decoder


def recognise_phones(samples_16k: np.ndarray) -> list[Phone]:
    """Phones with times for mono 16 kHz speech: float32 in [-1, 1], or int16 PCM as it is."""
    if samples_16k.dtype == np.int16:
        pcm = samples_16k.astype("<i2", copy=False).tobytes()
    else:
        pcm = (np.clip(samples_16k, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    decoder = _decoder()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    phones = []
    # seg() is None when the decoder has no hypothesis at all (a few ms of audio, a pure tone): no phones, which
    # the mouth track handles as any utterance without speech sounds (loudness drives the mouth).
    for segment in decoder.seg() or ():
        label = segment.word.strip("+").upper()
        if label in ("<S>", "</S>", "<SIL>", "NSN", "SPN", "BRTH", "NOISE", ""):
            label = "SIL"
        phones.append(Phone(label, segment.start_frame * PHONE_HOP_SECONDS,
                            (segment.end_frame + 1) * PHONE_HOP_SECONDS))
    return phones
