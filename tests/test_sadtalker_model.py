"""SadTalker (256) modules against the upstream file layouts, strict loading of random files written in the
upstream formats (.safetensors with part prefixes, mapping .pth.tar), refusals naming the bad key, and the
forward shapes upstream documents."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from schemas.errors import CheckpointError  # noqa: E402
from engines.sadtalker import checkpoint as ckpt  # noqa: E402
from engines.sadtalker.renderer import MappingNet, transform_keypoints  # noqa: E402
from tests.sadtalker_fixtures import LAYOUTS, MAPPING_NAME, SAFETENSORS_NAME, layout_state, write_sadtalker_dir  # noqa: E402

torch.set_num_threads(2)


def layout_of(state: dict, prefix: str = "") -> dict:
    return {f"{prefix}{k}": [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in state.items()}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_sadtalker_dir(tmp_path_factory.mktemp("sadtalker"), seed=1)


@pytest.fixture(scope="module")
def models(folder):
    return ckpt.load_models(folder)


def test_every_part_has_the_upstream_keys_shapes_and_dtypes():
    ours = {}
    for part in ckpt.PARTS:
        ours.update(layout_of(ckpt.build_part(part).state_dict(), part + "."))
    expected = LAYOUTS["sadtalker_256"]
    assert sorted(set(expected) - set(ours)) == [] and sorted(set(ours) - set(expected)) == []
    assert {k: v for k, v in ours.items() if v != expected[k]} == {}
    assert len(ours) == 1305
    # the traps: hook-style spectral norm triplets, the in-place widened CVAE encoder, the saved blur kernel
    assert "generator.decoder.G_middle_0.conv_0.weight_orig" in ours and "generator.decoder.G_middle_0.conv_0.weight" not in ours
    assert ours["audio2pose.netG.encoder.MLP.L0.weight"][0] == [128, 454]
    assert ours["kp_extractor.down.weight"][0] == [3, 1, 13, 13]
    assert layout_of(MappingNet().state_dict()) == LAYOUTS["mapping_00229"]


def test_random_upstream_files_load_strictly(folder, models):
    from safetensors import safe_open

    assert ckpt.load_sadtalker_file(folder / SAFETENSORS_NAME) is None
    assert ckpt.load_sadtalker_file(folder / MAPPING_NAME) is None
    with safe_open(str(folder / SAFETENSORS_NAME), framework="pt") as stored:  # the file's values were loaded
        assert torch.equal(models.kp_extractor.kp.weight, stored.get_tensor("kp_extractor.kp.weight"))
        assert torch.equal(models.audio2pose.netG.decoder.classbias, stored.get_tensor("audio2pose.netG.decoder.classbias"))
    mapping = torch.load(folder / MAPPING_NAME, weights_only=True)
    assert mapping["epoch"] == 229
    assert torch.equal(models.mapping.fc_exp.weight, mapping["mapping"]["fc_exp.weight"])
    assert all(not m.training for m in models.modules())


def part_state(part: str, seed: int = 3) -> dict:
    """One part's tensors as load_safetensors hands them to load_part (prefix stripped)."""
    import torch

    from tests.sadtalker_fixtures import random_tensor

    generator = torch.Generator().manual_seed(seed)
    return {key[len(part) + 1:]: random_tensor(key, shape, dtype, generator)
            for key, (shape, dtype) in LAYOUTS["sadtalker_256"].items() if key.startswith(part + ".")}


@pytest.mark.parametrize("part, change, named", [
    ("generator", lambda s: s.pop("decoder.G_middle_0.conv_0.weight_v"), "missing keys (1): generator.decoder.G_middle_0.conv_0.weight_v"),
    # torch's strict load lets a missing num_batches_tracked through; this check does not
    ("audio2pose", lambda s: s.pop("netD_motion.seq.1.norm.num_batches_tracked"), "missing keys (1): audio2pose.netD_motion.seq.1.norm.num_batches_tracked"),
    ("audio2pose", lambda s: s.__setitem__("netG.encoder.MLP.L0.weight", torch.zeros(128, 192)), "audio2pose.netG.encoder.MLP.L0.weight (128, 192) != (128, 454)"),
    ("kp_extractor", lambda s: s.__setitem__("kp.weight_orig", torch.zeros(15, 32, 3, 3, 3)), "unexpected keys (1): kp_extractor.kp.weight_orig"),
    ("face_3drecon", lambda s: s.__setitem__("final_layers.0.bias", torch.zeros(80, dtype=torch.float16)), "face_3drecon.final_layers.0.bias torch.float16 != torch.float32"),
])
def test_a_broken_part_names_the_bad_key(tmp_path, part, change, named):
    state = part_state(part)
    change(state)
    with pytest.raises(CheckpointError) as caught:
        ckpt.load_part(part, state, tmp_path / SAFETENSORS_NAME)
    assert named in caught.value.message and SAFETENSORS_NAME in caught.value.message


def test_a_file_with_keys_of_no_part_or_no_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / SAFETENSORS_NAME
    save_file({"he_estimator.fc_yaw.weight": torch.zeros(66, 2048), "audio2exp.mapping1.bias": torch.zeros(64)}, str(path))
    with pytest.raises(CheckpointError, match="keys under no known part .*: he_estimator.fc_yaw.weight"):
        ckpt.load_safetensors(path)
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="cannot read .* as a safetensors file"):
        ckpt.load_safetensors(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.load_safetensors(tmp_path / "absent.safetensors")


def test_mapping_file_needs_its_wrapping_and_exact_keys(tmp_path):
    path = tmp_path / MAPPING_NAME
    state = layout_state("mapping_00229")
    torch.save(state, path)  # a bare state dict: upstream reads checkpoint['mapping']
    with pytest.raises(CheckpointError, match="no 'mapping'"):
        ckpt.load_mapping(path)
    torch.save({"mapping": state}, path)
    with pytest.raises(CheckpointError, match="no 'epoch'"):
        ckpt.load_mapping(path)
    state["fc_t.weight"] = torch.zeros(6, 1024)
    torch.save({"mapping": state, "epoch": 229}, path)
    with pytest.raises(CheckpointError, match=r"fc_t.weight \(6, 1024\) != \(3, 1024\)"):
        ckpt.load_mapping(path)
    path.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot read"):
        ckpt.load_mapping(path)


def test_forward_shapes_match_upstream(models):
    with torch.inference_mode():
        canonical = models.kp_extractor(torch.rand(1, 3, 256, 256))
        assert canonical.shape == (1, 15, 3) and canonical.abs().max() <= 1
        motion = models.mapping(torch.randn(2, 70, 27))
        assert {k: tuple(v.shape) for k, v in motion.items()} == {
            "yaw": (2, 66), "pitch": (2, 66), "roll": (2, 66), "t": (2, 3), "exp": (2, 45)}
        assert models.face_3drecon(torch.rand(1, 3, 224, 224)).shape == (1, 257)
        assert models.audio2exp(torch.randn(3, 1, 80, 16), torch.randn(3, 64), torch.zeros(3, 1)).shape == (3, 64)
        assert models.audio2pose.motion(torch.randn(40, 1, 80, 16), torch.zeros(6), 5, torch.randn(2, 64)).shape == (40, 6)
        # the face renderer is fully convolutional; 128 px keeps this CPU test short (256 is what it was trained at)
        source = torch.rand(1, 3, 128, 128)
        kp = models.kp_extractor(source)
        driving = transform_keypoints(kp.expand(2, -1, -1), motion)
        still = transform_keypoints(kp.expand(2, -1, -1), {k: v[:1].expand(2, *v.shape[1:]) for k, v in motion.items()})
        out = models.generator(source.expand(2, -1, -1, -1), driving, still)
    assert out.shape == (2, 3, 128, 128) and 0 <= out.min() and out.max() <= 1
    assert not torch.equal(out[0], out[1])  # different motion, different frames


def test_keypoint_transform_is_identity_for_neutral_pose():
    canonical = torch.randn(1, 15, 3)
    centred = torch.full((1, 66), -1e4)
    centred[0, 33] = 1e4  # bin 33 -> 0 degrees
    motion = {"yaw": centred, "pitch": centred, "roll": centred, "t": torch.tensor([[5.0, 0.25, 7.0]]),
              "exp": torch.zeros(1, 45)}
    moved = transform_keypoints(canonical, motion)
    expected = canonical.clone()
    expected[..., 1] += 0.25  # only the vertical translation is used (upstream zeroes x and z)
    assert torch.allclose(moved, expected, atol=1e-5)


def test_spectral_norm_is_baked_into_plain_weights(models):
    conv = models.generator.decoder.G_middle_0.conv_0
    assert not hasattr(conv, "weight_orig") and isinstance(conv.weight, torch.nn.Parameter)
    sigma = torch.linalg.matrix_norm(conv.weight.reshape(conv.weight.shape[0], -1), ord=2)
    assert np.isfinite(float(sigma.detach()))
