"""Every engine's checkpoint files: where they come from and where they go (MODEL_ROOT and the *_CKPT*
variables).

Sizes and SHA-256 sums are recorded only where they were checked against the real files; where not, they
are None ("unknown") and a download is checked against the server's declared length instead, with its
SHA-256 printed and written beside the file so later `models verify` runs can hold it to that.
Entries without a direct URL (the file sits in a Google Drive folder) are listed with the page to get it from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engines.settings import ModelSettings

SADTALKER_RELEASE = "https://github.com/OpenTalker/SadTalker/releases/download/v0.0.2-rc/"
# Upstream's own Wav2Lip links (an IIIT OneDrive) were revoked in 2025; this mirror is the one named in
# upstream's issue tracker (Rudrabha/Wav2Lip#739). `models verify` checks any copy loads strictly.
WAV2LIP_MIRROR = "https://huggingface.co/numz/wav2lip_studio/resolve/main/Wav2lip/"


@dataclass(frozen=True)
class ModelFile:
    engine: str
    filename: str
    url: str | None  # direct download; None: fetch by hand from `page`
    page: str  # the project page that documents the file
    size: int | None = None  # bytes, where checked
    sha256: str | None = None  # where checked
    note: str = ""

    def destination(self, settings: ModelSettings) -> Path:
        if self.engine == "wav2lip":
            # WAV2LIP_CKPT names the file the engine loads; the other Wav2Lip checkpoint goes beside it.
            default = settings.wav2lip_ckpt
            return default if default.name == self.filename else default.parent / self.filename
        if self.engine == "gfpgan":
            return settings.gfpgan_ckpt
        folder = {"sadtalker": settings.sadtalker_ckpt_dir, "fomm": settings.fomm_ckpt_dir,
                  "diff2lip": settings.diff2lip_ckpt_dir}[self.engine]
        return folder / self.filename

    def download_url(self, mirror: str = "") -> str | None:
        """``mirror`` (MODEL_MIRROR: a base URL, e.g. an internal mirror) serves every file as
        <mirror>/<engine>/<file>; without one, the upstream URL (None: fetch by hand)."""
        mirror = mirror.rstrip("/")
        if mirror:
            return f"{mirror}/{self.engine}/{self.filename}"
        return self.url


CATALOG: list[ModelFile] = [
    ModelFile("wav2lip", "wav2lip_gan.pth", WAV2LIP_MIRROR + "wav2lip_gan.pth",
              "https://github.com/Rudrabha/Wav2Lip#getting-the-weights",
              note="Wav2Lip + GAN: the real_time engine's default (WAV2LIP_CKPT)"),
    ModelFile("wav2lip", "wav2lip.pth", WAV2LIP_MIRROR + "wav2lip.pth",
              "https://github.com/Rudrabha/Wav2Lip#getting-the-weights",
              note="Wav2Lip without GAN: sharper sync, blurrier mouth; use with WAV2LIP_CKPT"),
    ModelFile("sadtalker", "SadTalker_V0.0.2_256.safetensors", SADTALKER_RELEASE + "SadTalker_V0.0.2_256.safetensors",
              "https://github.com/OpenTalker/SadTalker#-2-download-models"),
    ModelFile("sadtalker", "SadTalker_V0.0.2_512.safetensors", SADTALKER_RELEASE + "SadTalker_V0.0.2_512.safetensors",
              "https://github.com/OpenTalker/SadTalker#-2-download-models"),
    ModelFile("sadtalker", "mapping_00109-model.pth.tar", SADTALKER_RELEASE + "mapping_00109-model.pth.tar",
              "https://github.com/OpenTalker/SadTalker#-2-download-models"),
    ModelFile("sadtalker", "mapping_00229-model.pth.tar", SADTALKER_RELEASE + "mapping_00229-model.pth.tar",
              "https://github.com/OpenTalker/SadTalker#-2-download-models"),
    ModelFile("fomm", "vox-cpk.pth.tar", None,
              "https://github.com/AliaksandrSiarohin/first-order-model#pre-trained-checkpoint",
              note="in the authors' Google Drive / Yandex Disk folder; download by hand into FOMM_CKPT_DIR"),
    ModelFile("diff2lip", "checkpoint.pt", None, "https://github.com/soumik-kanad/diff2lip#inference",
              note="linked from the Diff2Lip README (Google Drive); download by hand into DIFF2LIP_CKPT_DIR"),
    ModelFile("gfpgan", "GFPGANv1.4.pth", "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth",
              "https://github.com/TencentARC/GFPGAN#european_castle-model-zoo", note="face enhancement (GFPGAN_CKPT)"),
]

ENGINES = sorted({entry.engine for entry in CATALOG})


def entries(engines: list[str] | None = None, catalog: list[ModelFile] | None = None) -> list[ModelFile]:
    catalog = CATALOG if catalog is None else catalog
    return [e for e in catalog if not engines or e.engine in engines]
