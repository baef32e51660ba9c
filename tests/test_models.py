"""`avatar-renderer models`: resumable checked downloads against a local HTTP server serving made-up files,
placement under MODEL_ROOT / WAV2LIP_CKPT, and strict verification of Wav2Lip checkpoints."""

from __future__ import annotations

import hashlib
import io
import json
import socket

import numpy as np
import pytest

from tests.models_http import serving
from cli.main import main
from cli.models_catalog import CATALOG
from cli.models_download import download
from schemas.errors import DownloadError

BLOB = np.random.default_rng(0).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()


def test_fresh_download_is_checked_and_moved_into_place(tmp_path):
    with serving({"/m.bin": BLOB}) as server:
        got = download(server.url + "/m.bin", tmp_path / "m.bin", size=len(BLOB), sha256=BLOB_SHA, progress=False)
    assert (tmp_path / "m.bin").read_bytes() == BLOB
    assert got.sha256 == BLOB_SHA and got.resumed_from == 0
    assert not (tmp_path / "m.bin.part").exists()


def test_interrupted_download_resumes_with_a_range_request(tmp_path):
    dest = tmp_path / "m.bin"
    with serving({"/m.bin": BLOB}) as server:
        server.cut_after = 1_000_000
        with pytest.raises(DownloadError, match="resume"):
            download(server.url + "/m.bin", dest, progress=False)
        partial = (tmp_path / "m.bin.part").stat().st_size
        assert 0 < partial < len(BLOB) and not dest.exists()
        server.cut_after = None
        got = download(server.url + "/m.bin", dest, sha256=BLOB_SHA, progress=False)
    assert server.requests[-1] == ("/m.bin", f"bytes={partial}-")
    assert got.resumed_from == partial
    assert dest.read_bytes() == BLOB


def test_server_without_range_support_restarts_cleanly(tmp_path):
    (tmp_path / "m.bin.part").write_bytes(b"stale bytes that are not the file")
    with serving({"/m.bin": BLOB}) as server:
        server.ranges = False
        got = download(server.url + "/m.bin", tmp_path / "m.bin", sha256=BLOB_SHA, progress=False)
    assert got.resumed_from == 0 and (tmp_path / "m.bin").read_bytes() == BLOB


def test_checksum_or_size_mismatch_leaves_nothing_behind(tmp_path):
    with serving({"/m.bin": BLOB}) as server:
        with pytest.raises(DownloadError, match="SHA-256"):
            download(server.url + "/m.bin", tmp_path / "m.bin", sha256="0" * 64, progress=False)
        with pytest.raises(DownloadError, match="expected 12345"):
            download(server.url + "/m.bin", tmp_path / "m.bin", size=12345, progress=False)
        with pytest.raises(DownloadError, match="HTTP 404"):
            download(server.url + "/absent", tmp_path / "a.bin", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_catalog_covers_every_engine_with_honest_checksums():
    engines = {e.engine for e in CATALOG}
    assert engines == {"wav2lip", "sadtalker", "fomm", "diff2lip", "gfpgan"}
    for entry in CATALOG:
        assert entry.url is None or entry.url.startswith("https://")
        assert entry.sha256 is None or len(entry.sha256) == 64
        assert entry.page.startswith("https://")


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def model_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_ROOT", str(tmp_path / "models"))
    for name in ("WAV2LIP_CKPT", "GFPGAN_CKPT", "SADTALKER_CKPT_DIR", "FOMM_CKPT_DIR", "DIFF2LIP_CKPT_DIR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "models"


def test_list_places_files_under_model_root_and_the_ckpt_variables(model_env, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WAV2LIP_CKPT", str(tmp_path / "elsewhere" / "wav2lip_gan.pth"))
    code, out, _ = run_cli(capsys, "models", "list", "--json")
    rows = {(r["engine"], r["file"]): r for r in json.loads(out)}
    assert code == 0
    assert rows[("wav2lip", "wav2lip_gan.pth")]["path"] == str(tmp_path / "elsewhere" / "wav2lip_gan.pth")
    assert rows[("wav2lip", "wav2lip.pth")]["path"] == str(tmp_path / "elsewhere" / "wav2lip.pth")
    assert rows[("gfpgan", "GFPGANv1.4.pth")]["path"] == str(model_env / "gfpgan" / "GFPGANv1.4.pth")
    assert rows[("fomm", "vox-cpk.pth.tar")]["url"].startswith("by hand: https://")
    assert all(not r["present"] for r in rows.values())


def test_cli_downloads_from_a_mirror_then_verifies_strictly(model_env, monkeypatch, capsys):
    torch = pytest.importorskip("torch")
    from tests.wav2lip_fixtures import random_model

    buffer = io.BytesIO()
    torch.save({"state_dict": random_model().state_dict(), "global_step": 1}, buffer)
    files = {"/wav2lip/wav2lip_gan.pth": buffer.getvalue(), "/wav2lip/wav2lip.pth": BLOB}
    with serving(files) as server:
        monkeypatch.setenv("MODEL_MIRROR", server.url)
        code, out, err = run_cli(capsys, "models", "download", "--engine", "wav2lip", "--no-progress")
        assert code == 0, err
        assert (model_env / "wav2lip" / "wav2lip_gan.pth").read_bytes() == files["/wav2lip/wav2lip_gan.pth"]
        assert f"sha256 {BLOB_SHA}" in out
        # The catalog knows no hash for these files: the one downloaded is recorded and held to.
        assert (model_env / "wav2lip" / "wav2lip.pth.sha256").read_text().split()[0] == BLOB_SHA
        code, out, _ = run_cli(capsys, "models", "download", "--engine", "wav2lip", "--no-progress")
        assert code == 0 and out.count("already present") == 2

    code, out, _ = run_cli(capsys, "models", "verify", "--engine", "wav2lip")
    assert code == 1  # the made-up wav2lip.pth is not a checkpoint
    assert "OK       wav2lip/wav2lip_gan.pth" in out
    assert "BAD      wav2lip/wav2lip.pth" in out and "cannot read the Wav2Lip checkpoint" in out

    (model_env / "wav2lip" / "wav2lip.pth").write_bytes(buffer.getvalue())  # replaced behind our back
    code, out, _ = run_cli(capsys, "models", "verify", "--engine", "wav2lip")
    assert code == 1 and "SHA-256" in out


def test_verify_a_given_checkpoint(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from tests.wav2lip_fixtures import random_model, save_upstream

    good = save_upstream(random_model(), tmp_path / "good.pth", data_parallel=True)
    code, out, _ = run_cli(capsys, "models", "verify", "--engine", "wav2lip", "--checkpoint", str(good))
    assert code == 0 and out.startswith("OK: ")

    state = random_model().state_dict()
    state.pop("output_block.1.weight")
    torch.save({"state_dict": state}, tmp_path / "bad.pth")
    code, _, err = run_cli(capsys, "models", "verify", "--engine", "wav2lip", "--checkpoint", str(tmp_path / "bad.pth"))
    assert code == 1 and "missing keys (1): output_block.1.weight" in err


def _closed_port_url() -> str:
    """A local URL nothing listens on: connecting is refused, as on a machine with no route to the host."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_unreachable_host_says_so_and_names_the_mirror_not_resume(tmp_path):
    with pytest.raises(DownloadError) as failed:
        download(_closed_port_url() + "/m.bin", tmp_path / "m.bin", progress=False, unreachable_hint="try a mirror")
    message = failed.value.message
    assert message.startswith("could not reach the model host 127.0.0.1:") and "no access" in message
    assert message.endswith("; try a mirror.") and "resume" not in message


def test_catalog_urls_come_from_the_mirror_passed_in_not_the_environment(monkeypatch):
    monkeypatch.setenv("MODEL_MIRROR", "http://from-the-environment")
    entry = next(e for e in CATALOG if e.filename == "wav2lip_gan.pth")
    assert entry.download_url() == entry.url
    assert entry.download_url("http://mirror.local/models/") == "http://mirror.local/models/wav2lip/wav2lip_gan.pth"


def test_cli_download_offline_explains_the_network_and_model_mirror(model_env, monkeypatch, capsys):
    monkeypatch.setenv("MODEL_MIRROR", _closed_port_url())
    code, out, err = run_cli(capsys, "models", "download", "--engine", "gfpgan", "--no-progress")
    assert code == 1 and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith("error: gfpgan/GFPGANv1.4.pth: could not reach the model host 127.0.0.1:")
    assert "this machine may have no access to it" in line and "resume" not in line
    assert "MODEL_MIRROR=http://127.0.0.1:" in line and "/<engine>/<file>" in line
    assert not (model_env / "gfpgan").exists() or not any((model_env / "gfpgan").iterdir())


def test_without_a_mirror_the_offline_hint_explains_model_mirror():
    from cli.models import unreachable_hint

    assert "set MODEL_MIRROR=<url>" in unreachable_hint("")
    assert "<url>/wav2lip/wav2lip_gan.pth" in unreachable_hint("")


def test_a_bad_model_mirror_is_one_line(model_env, monkeypatch, capsys):
    monkeypatch.setenv("MODEL_MIRROR", "models.example.com")
    code, out, err = run_cli(capsys, "models", "list")
    assert code == 2 and out == ""
    assert err.strip() == "error: MODEL_MIRROR='models.example.com' is not an http(s):// URL."


def test_verify_with_nothing_present_fails_and_says_how_to_get_them(model_env, capsys):
    code, out, err = run_cli(capsys, "models", "verify")
    assert code == 1
    assert out.count("missing ") == len(CATALOG)
    assert err.strip() == (f"error: none of the {len(CATALOG)} checkpoint files is present (MODEL_ROOT={model_env}); "
                           "get them with `avatar-renderer models download`.")
    code, _, err = run_cli(capsys, "models", "verify", "--engine", "gfpgan")
    assert code == 1 and "`avatar-renderer models download --engine gfpgan`" in err


def test_verify_with_some_present_names_what_is_missing(model_env, capsys):
    (model_env / "gfpgan").mkdir(parents=True)
    # The catalog knows no size or hash for it, so the file is judged by loading it: these bytes are no checkpoint.
    (model_env / "gfpgan" / "GFPGANv1.4.pth").write_bytes(BLOB)
    code, out, _ = run_cli(capsys, "models", "verify")
    assert code == 1
    assert "BAD      gfpgan/GFPGANv1.4.pth" in out and "cannot read the GFPGAN checkpoint" in out
    assert f"{len(CATALOG) - 1} missing; `avatar-renderer models download` gets them" in out
