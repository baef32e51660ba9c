"""The Wav2Lip model: parameter names and shapes as in the official checkpoints, strict loading of files
saved the way upstream saves them, and clear refusals of files that do not fit."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from engines.wav2lip.checkpoint import CheckpointError, load_wav2lip, unwrap_state_dict  # noqa: E402
from engines.wav2lip.model import Wav2Lip  # noqa: E402
from tests.wav2lip_fixtures import inputs, random_model, save_upstream  # noqa: E402

torch.set_num_threads(2)

# The published architecture as data: (cin, cout, kernel) per wrapped conv; "T" marks a transposed conv.
FACE_ENCODER = [
    [(6, 16, 7)],
    [(16, 32, 3)] + [(32, 32, 3)] * 2,
    [(32, 64, 3)] + [(64, 64, 3)] * 3,
    [(64, 128, 3)] + [(128, 128, 3)] * 2,
    [(128, 256, 3)] + [(256, 256, 3)] * 2,
    [(256, 512, 3), (512, 512, 3)],
    [(512, 512, 3), (512, 512, 1)],
]
AUDIO_ENCODER = [(1, 32, 3), (32, 32, 3), (32, 32, 3), (32, 64, 3), (64, 64, 3), (64, 64, 3), (64, 128, 3),
                 (128, 128, 3), (128, 128, 3), (128, 256, 3), (256, 256, 3), (256, 512, 3), (512, 512, 1)]
FACE_DECODER = [
    [(512, 512, 1)],
    [("T", 1024, 512, 3), (512, 512, 3)],
    [("T", 1024, 512, 3)] + [(512, 512, 3)] * 2,
    [("T", 768, 384, 3)] + [(384, 384, 3)] * 2,
    [("T", 512, 256, 3)] + [(256, 256, 3)] * 2,
    [("T", 320, 128, 3)] + [(128, 128, 3)] * 2,
    [("T", 160, 64, 3)] + [(64, 64, 3)] * 2,
]


def expected_shapes() -> dict[str, tuple]:
    shapes: dict[str, tuple] = {}

    def wrapped(prefix: str, spec) -> None:
        transposed = spec[0] == "T"
        cin, cout, k = spec[1:] if transposed else spec
        shapes[f"{prefix}.conv_block.0.weight"] = (cin, cout, k, k) if transposed else (cout, cin, k, k)
        shapes[f"{prefix}.conv_block.0.bias"] = (cout,)
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.conv_block.1.{name}"] = (cout,)
        shapes[f"{prefix}.conv_block.1.num_batches_tracked"] = ()

    for b, block in enumerate(FACE_ENCODER):
        for i, spec in enumerate(block):
            wrapped(f"face_encoder_blocks.{b}.{i}", spec)
    for i, spec in enumerate(AUDIO_ENCODER):
        wrapped(f"audio_encoder.{i}", spec)
    for b, block in enumerate(FACE_DECODER):
        for i, spec in enumerate(block):
            wrapped(f"face_decoder_blocks.{b}.{i}", spec)
    wrapped("output_block.0", (80, 32, 3))
    shapes["output_block.1.weight"] = (3, 32, 1, 1)
    shapes["output_block.1.bias"] = (3,)
    return shapes


def test_state_dict_names_and_shapes_match_the_published_architecture():
    actual = {key: tuple(value.shape) for key, value in Wav2Lip().state_dict().items()}
    expected = expected_shapes()
    assert sorted(set(expected) - set(actual)) == []
    assert sorted(set(actual) - set(expected)) == []
    assert {k: v for k, v in actual.items() if expected[k] != v} == {}


def test_residual_flags_follow_the_architecture():
    model = Wav2Lip()
    first_of_block = model.face_encoder_blocks[2][0]
    assert not first_of_block.residual and model.face_encoder_blocks[2][1].residual
    assert [m.residual for m in model.audio_encoder] == [
        False, True, True, False, True, True, False, True, True, False, True, False, False]


def test_forward_shapes_and_range():
    mel, faces = inputs(2)
    with torch.inference_mode():
        out = random_model()(torch.from_numpy(mel), torch.from_numpy(faces))
    assert tuple(out.shape) == (2, 3, 96, 96)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@pytest.mark.parametrize("data_parallel", [False, True])
def test_upstream_format_checkpoint_loads_strictly_with_identical_outputs(tmp_path, data_parallel):
    model = random_model(seed=1)
    path = save_upstream(model, tmp_path / "wav2lip_gan.pth", data_parallel=data_parallel,
                         with_optimizer=not data_parallel)
    loaded = load_wav2lip(path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    mel, faces = inputs(2, seed=4)
    with torch.inference_mode():
        a = model(torch.from_numpy(mel), torch.from_numpy(faces))
        b = loaded(torch.from_numpy(mel), torch.from_numpy(faces))
    assert torch.equal(a, b)
    assert not loaded.training


def test_bare_state_dict_loads(tmp_path):
    model = random_model(seed=2)
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    loaded = load_wav2lip(tmp_path / "bare.pth")
    assert torch.equal(loaded.output_block[1].weight, model.output_block[1].weight)


def test_mismatched_checkpoint_lists_missing_unexpected_and_misshaped_keys(tmp_path):
    state = random_model().state_dict()
    del state["audio_encoder.3.conv_block.0.weight"]
    state["audio_encoder.99.conv_block.0.weight"] = torch.zeros(1)
    state["output_block.1.bias"] = torch.zeros(4)
    torch.save({"state_dict": state}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError) as caught:
        load_wav2lip(tmp_path / "odd.pth")
    message = caught.value.message
    assert "missing keys (1): audio_encoder.3.conv_block.0.weight" in message
    assert "unexpected keys (1): audio_encoder.99.conv_block.0.weight" in message
    assert "output_block.1.bias (4,) != (3,)" in message


def test_a_sync_expert_or_other_model_is_refused_with_counts(tmp_path):
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    torch.save({"state_dict": other.state_dict()}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"missing keys \(352\).*more; unexpected keys \(7\)"):
        load_wav2lip(tmp_path / "other.pth")


def test_unreadable_and_absent_files_are_reported(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a torch file")
    with pytest.raises(CheckpointError, match="cannot read the Wav2Lip checkpoint"):
        load_wav2lip(junk)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_wav2lip(tmp_path / "absent.pth")
    with pytest.raises(CheckpointError, match="no state dict"):
        unwrap_state_dict({})
