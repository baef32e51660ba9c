"""`avatar-renderer models list | download | verify`: the engines' checkpoints, fetched and checked.

Files go where the engines look (MODEL_ROOT and the WAV2LIP_CKPT / *_CKPT_DIR / GFPGAN_CKPT variables);
MODEL_MIRROR points downloads at a mirror. The environment is read here, in the command functions, and passed
down as values, so the catalog and the downloader are testable without it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from engines.files import file_sha256
from engines.settings import ModelSettings
from schemas.errors import DownloadError, SettingsError

from .models_catalog import ENGINES, ModelFile, entries
from .models_download import download

SIDECAR = ".sha256"  # written beside a file whose SHA-256 the catalog does not know


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR)


def model_mirror(env) -> str:
    """MODEL_MIRROR: a base URL serving every file as <mirror>/<engine>/<file>; empty: the upstream URLs."""
    mirror = env.get("MODEL_MIRROR", "").strip().rstrip("/")
    if mirror and not mirror.startswith(("https://", "http://")):
        raise SettingsError(f"MODEL_MIRROR={mirror!r} is not an http(s):// URL.")
    return mirror


def unreachable_hint(mirror: str) -> str:
    """What to do when the model host cannot be reached (said once per failed file)."""
    if mirror:
        return (f"check MODEL_MIRROR={mirror}: it must serve each file as {mirror}/<engine>/<file> "
                f"(e.g. {mirror}/wav2lip/wav2lip_gan.pth)")
    return ("set MODEL_MIRROR=<url> to download from a mirror instead: it must serve each file as "
            "<url>/<engine>/<file> (e.g. <url>/wav2lip/wav2lip_gan.pth)")


def _state(entry: ModelFile, settings: ModelSettings, mirror: str) -> dict:
    dest = entry.destination(settings)
    return {
        "engine": entry.engine, "file": entry.filename, "path": str(dest), "present": dest.is_file(),
        "bytes": dest.stat().st_size if dest.is_file() else None,
        "expected_bytes": entry.size, "sha256": entry.sha256 or "unknown",
        "url": entry.download_url(mirror) or f"by hand: {entry.page}", "note": entry.note,
    }


def run_list(args: argparse.Namespace) -> int:
    settings, mirror = ModelSettings.from_env(dict(os.environ)), model_mirror(os.environ)
    rows = [_state(e, settings, mirror) for e in entries(args.engine)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        mark = "present" if row["present"] else "missing"
        size = f"{row['expected_bytes']} B" if row["expected_bytes"] else "size unknown"
        print(f"{row['engine']:<10} {row['file']:<36} {mark:<8} {row['path']}")
        print(f"{'':<10} {size}, sha256 {row['sha256']}; {row['url']}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    settings, mirror = ModelSettings.from_env(dict(os.environ)), model_mirror(os.environ)
    failures = 0
    for entry in entries(args.engine):
        dest = entry.destination(settings)
        url = entry.download_url(mirror)
        if url is None:
            print(f"{entry.engine}/{entry.filename}: no direct download; get it from {entry.page} "
                  f"and place it at {dest}" + (f" ({entry.note})" if entry.note else ""))
            continue
        if dest.is_file() and not args.force:
            problem = check_file(entry, dest)
            if not problem:
                print(f"{entry.engine}/{entry.filename}: already present at {dest}")
                continue
            print(f"{entry.engine}/{entry.filename}: present but {problem}; downloading again")
            dest.unlink()
        try:
            got = download(url, dest, size=entry.size, sha256=entry.sha256, progress=not args.no_progress,
                           unreachable_hint=unreachable_hint(mirror))
        except DownloadError as exc:
            failures += 1
            print(f"error: {entry.engine}/{entry.filename}: {exc}", file=sys.stderr)
            continue
        if entry.sha256 is None:
            _sidecar(dest).write_text(f"{got.sha256}  {dest.name}\n")
        resumed = f", resumed from byte {got.resumed_from}" if got.resumed_from else ""
        checked = "checksum OK" if entry.sha256 else "length as declared; sha256 recorded (catalog has none)"
        print(f"{entry.engine}/{entry.filename}: {got.size} bytes at {dest}, sha256 {got.sha256} ({checked}{resumed})")
    return 1 if failures else 0


def check_file(entry: ModelFile, path: Path) -> str:
    """Empty when ``path`` matches what is known of the file (catalog size and hash, or the recorded hash)."""
    if entry.size is not None and path.stat().st_size != entry.size:
        return f"{path.stat().st_size} bytes, expected {entry.size}"
    expected = entry.sha256
    if expected is None and _sidecar(path).is_file():
        expected = _sidecar(path).read_text().split()[0]
    if expected is not None:
        actual = file_sha256(path)
        if actual != expected.lower():
            return f"SHA-256 {actual}, expected {expected}"
    return ""


# engine -> (module, function) that loads one of its checkpoint files strictly, raising CheckpointError
# (engine_unavailable) naming the first bad key. Engines with several files (SadTalker) pick by file name.
LOADERS = {
    "wav2lip": ("engines.wav2lip.checkpoint", "load_wav2lip"),
    "fomm": ("engines.fomm.checkpoint", "load_fomm"),
    "diff2lip": ("engines.diff2lip.checkpoint", "load_diff2lip"),
    "gfpgan": ("engines.gfpgan.checkpoint", "load_gfpgan"),
    "sadtalker": ("engines.sadtalker.checkpoint", "load_sadtalker_file"),  # .safetensors or mapping .pth.tar
}
LABELS = {"wav2lip": "Wav2Lip", "fomm": "FOMM vox-256", "diff2lip": "Diff2Lip", "gfpgan": "GFPGAN v1.3/v1.4",
          "sadtalker": "SadTalker"}


def verify_loadable(engine: str, path: Path) -> str:
    """Load-check ``path`` strictly into this build's model for ``engine``; empty when fine."""
    import importlib

    from schemas.errors import EngineUnavailable

    if engine not in LOADERS:
        return ""
    module, function = LOADERS[engine]
    try:
        load = getattr(importlib.import_module(module), function)
    except ImportError:
        return "cannot load-check it: PyTorch is not installed (pip install 'avatar-renderer[neural]')"
    try:
        load(path)
    except EngineUnavailable as exc:
        return exc.message
    return ""


def run_verify(args: argparse.Namespace) -> int:
    if args.checkpoint:
        engine = (args.engine or ["wav2lip"])[0]
        path = Path(args.checkpoint)
        if engine not in LOADERS:
            print(f"error: this build can load-check {', '.join(sorted(LOADERS))} checkpoints, not {engine}",
                  file=sys.stderr)
            return 2
        problem = "does not exist" if not path.is_file() else verify_loadable(engine, path)
        if problem:
            print(f"error: {path}: {problem}", file=sys.stderr)
            return 1
        print(f"OK: {path} is a {LABELS[engine]} checkpoint; every key and shape matches (sha256 {file_sha256(path)})")
        return 0
    settings = ModelSettings.from_env(dict(os.environ))
    bad = checked = missing = 0
    for entry in entries(args.engine):
        dest = entry.destination(settings)
        if not dest.is_file():
            missing += 1
            print(f"missing  {entry.engine}/{entry.filename} ({dest})")
            continue
        checked += 1
        problem = check_file(entry, dest) or verify_loadable(entry.engine, dest)
        bad += bool(problem)
        print(f"{'BAD' if problem else 'OK':<8} {entry.engine}/{entry.filename} ({dest})" + (f": {problem}" if problem else ""))
    get = "avatar-renderer models download" + "".join(f" --engine {e}" for e in args.engine or ())
    if not checked:  # nothing to vouch for: the engines that need these files cannot run
        print(f"error: none of the {missing} checkpoint files is present (MODEL_ROOT={settings.model_root}); "
              f"get them with `{get}`.", file=sys.stderr)
        return 1
    if missing:
        print(f"{missing} missing; `{get}` gets them (or says where to get them by hand).")
    return 1 if bad else 0


def add_models_command(commands) -> None:
    models = commands.add_parser("models", help="list, download and verify the neural engines' checkpoints")
    actions = models.add_subparsers(dest="models_action", required=True)
    engine_help = f"only this engine's files (repeatable): {', '.join(ENGINES)}"

    listing = actions.add_parser("list", help="every checkpoint, where it goes, whether it is there")
    listing.add_argument("--engine", action="append", choices=ENGINES, help=engine_help)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=run_list)

    fetch = actions.add_parser("download", help="download (resuming partial files) and check checkpoints")
    fetch.add_argument("--engine", action="append", choices=ENGINES, help=engine_help)
    fetch.add_argument("--force", action="store_true", help="download again even when the file is there")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bars")
    fetch.set_defaults(handler=run_download)

    verify = actions.add_parser("verify", help="check sizes and hashes; load checkpoints strictly")
    verify.add_argument("--engine", action="append", choices=ENGINES, help=engine_help)
    verify.add_argument("--checkpoint", help="check this file instead of the catalogued ones")
    verify.set_defaults(handler=run_verify)
