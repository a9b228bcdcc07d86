"""TorchvisionBackbone with a random-weight resnet18 saved as a state_dict file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from shopvec.encoders.backbone import TorchvisionBackbone


def _save_resnet18(path: Path, seed: int, **kwargs: int) -> Path:
    torch.manual_seed(seed)
    torch.save(torchvision.models.resnet18(weights=None, **kwargs).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_resnet18(tmp_path_factory.mktemp("backbone") / "resnet18.pth", seed=0)


@pytest.fixture(scope="module")
def backbone(weights: Path) -> TorchvisionBackbone:
    # batch_size 2 so that the five images span several batches.
    return TorchvisionBackbone("resnet18", str(weights), device="cpu", batch_size=2)


def _images() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    sizes = [(224, 224), (300, 200), (64, 96), (9, 13), (256, 256)]
    return [
        torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator) for h, w in sizes
    ]


def test_identity(backbone: TorchvisionBackbone) -> None:
    assert backbone.dim == 512  # resnet18's pooled features, the head gone
    assert backbone.model_id == "torchvision:resnet18"
    assert len(backbone.version) == 12


def test_images_of_any_size_encode_to_unit_rows_in_input_order(
    backbone: TorchvisionBackbone,
) -> None:
    images = _images()
    vectors = backbone.encode(images)
    assert vectors.shape == (len(images), 512)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    one_by_one = np.concatenate([backbone.encode([image]) for image in images])
    np.testing.assert_allclose(vectors, one_by_one, atol=1e-5)
    assert len({row.tobytes() for row in vectors.round(4)}) == len(images)
    assert backbone.encode([]).shape == (0, 512)


def test_features_are_the_pooled_layer_before_the_head(
    backbone: TorchvisionBackbone, weights: Path
) -> None:
    reference = torchvision.models.resnet18(weights=None)
    reference.load_state_dict(torch.load(weights, weights_only=True))
    reference.fc = torch.nn.Identity()
    transforms = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    images = _images()[:2]
    with torch.inference_mode():
        expected = reference.eval()(torch.stack([transforms(image) for image in images]))
    expected = torch.nn.functional.normalize(expected, dim=-1).numpy()
    np.testing.assert_allclose(backbone.encode(images), expected, atol=1e-5)


def test_version_follows_the_weights(
    backbone: TorchvisionBackbone, weights: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy.pth"
    copy.write_bytes(weights.read_bytes())
    assert TorchvisionBackbone("resnet18", str(copy), device="cpu").version == backbone.version
    other = _save_resnet18(tmp_path / "other.pth", seed=1)
    assert TorchvisionBackbone("resnet18", str(other), device="cpu").version != backbone.version


def test_a_head_fine_tuned_on_other_classes_still_loads(tmp_path: Path) -> None:
    weights = _save_resnet18(tmp_path / "ten-classes.pth", seed=2, num_classes=10)
    assert TorchvisionBackbone("resnet18", str(weights), device="cpu").dim == 512


def test_weights_of_another_architecture_are_refused(weights: Path) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        TorchvisionBackbone("resnet34", str(weights), device="cpu")


def test_unknown_architecture_is_refused(weights: Path) -> None:
    with pytest.raises(ValueError, match="not a torchvision classification model"):
        TorchvisionBackbone("resnet9000", str(weights), device="cpu")


def test_without_a_path_only_the_hub_cache_is_used(
    weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="never downloads"):
        TorchvisionBackbone("resnet18", None, device="cpu")
    cached = tmp_path / "checkpoints" / Path(torchvision.models.ResNet18_Weights.DEFAULT.url).name
    cached.parent.mkdir()
    cached.write_bytes(weights.read_bytes())
    assert TorchvisionBackbone("resnet18", None, device="cpu").dim == 512


def test_images_outside_the_contract_are_refused(backbone: TorchvisionBackbone) -> None:
    with pytest.raises(ValueError, match="image 0"):
        backbone.encode([torch.zeros((3, 8, 8), dtype=torch.float32)])
