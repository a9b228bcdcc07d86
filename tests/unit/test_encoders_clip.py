"""ClipFamilyEncoder against tiny random-weight CLIP, Chinese-CLIP and SigLIP checkpoints.

The checkpoints (model, tokenizer, image processor) are built offline and saved once per
session, then loaded back the way production loads a real one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from shopvec.encoders.base import Encoder
from shopvec.encoders.clip import ClipFamilyEncoder

FAMILIES = ("clip", "chinese_clip", "siglip")
PROJECTION_DIM = {"clip": 16, "chinese_clip": 24, "siglip": 32}
TEXT_MAX_LENGTH = 16

TEXTS = [
    "a red summer dress",
    "红色连衣裙",
    "shoe",
    "",
    "blue running shoes for women, size 38, breathable mesh upper",
    "蓝色运动鞋 女款",
]

_TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
_VISION = {**_TOWER, "num_attention_heads": 2, "image_size": 32, "patch_size": 8}
_MEAN_STD = {"image_mean": [0.48, 0.46, 0.41], "image_std": [0.27, 0.26, 0.28]}


def _clip(folder: Path) -> None:
    from tokenizers import pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    # Byte-level BPE with no merges: every UTF-8 byte is a token, so any text encodes.
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    for piece in alphabet + [char + "</w>" for char in alphabet]:
        vocab.setdefault(piece, len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=TEXT_MAX_LENGTH)
    text = {**_TOWER, "num_attention_heads": 2, "vocab_size": len(vocab)}
    text |= {"max_position_embeddings": TEXT_MAX_LENGTH, "bos_token_id": 0, "eos_token_id": 1}
    text |= {"pad_token_id": 1}
    config = CLIPConfig(
        text_config=text, vision_config=_VISION, projection_dim=PROJECTION_DIM["clip"]
    )
    processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, **_MEAN_STD
    )
    CLIPModel(config).save_pretrained(folder)
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(folder)


def _chinese_clip(folder: Path) -> None:
    from transformers import (
        BertTokenizer,
        ChineseCLIPConfig,
        ChineseCLIPImageProcessor,
        ChineseCLIPModel,
        ChineseCLIPProcessor,
    )

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz0123456789"]
    words += [*"红色连衣裙蓝运动鞋女款", "a", "red", "shoe", "##s"]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(dict.fromkeys(words))})
    tokenizer.model_max_length = TEXT_MAX_LENGTH
    text = {**_TOWER, "num_attention_heads": 2, "vocab_size": len(tokenizer)}
    text |= {"max_position_embeddings": 64, "pad_token_id": 0}
    config = ChineseCLIPConfig(
        text_config=text, vision_config=_VISION, projection_dim=PROJECTION_DIM["chinese_clip"]
    )
    processor = ChineseCLIPImageProcessor(
        size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32}, **_MEAN_STD
    )
    ChineseCLIPModel(config).save_pretrained(folder)
    ChineseCLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(folder)


def _siglip(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import (
        PreTrainedTokenizerFast,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipProcessor,
    )

    # A unigram model like SigLIP's sentencepiece one, built without sentencepiece.
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [
        (char, -3.0) for char in "abcdefghijklmnopqrstuvwxyz0123456789,红色连衣裙蓝运动鞋女款"
    ]
    pieces += [("\u2581" + word, -1.0) for word in ("a", "red", "blue", "dress", "shoe")]
    backend = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=TEXT_MAX_LENGTH,
        model_input_names=["input_ids"],  # as SigLIP's own tokenizer: no attention mask
    )
    text = {**_TOWER, "num_attention_heads": 2, "vocab_size": len(pieces)}
    text |= {
        "max_position_embeddings": TEXT_MAX_LENGTH,
        "projection_size": PROJECTION_DIM["siglip"],
    }
    text |= {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": None}
    config = SiglipConfig(text_config=text, vision_config=_VISION)
    processor = SiglipImageProcessor(size={"height": 32, "width": 32}, **_MEAN_STD)
    SiglipModel(config).save_pretrained(folder)
    SiglipProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(folder)


_BUILDERS = {"clip": _clip, "chinese_clip": _chinese_clip, "siglip": _siglip}


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clip-checkpoints")
    folders = {}
    for seed, family in enumerate(FAMILIES):
        torch.manual_seed(seed)
        folders[family] = root / f"tiny-{family}"
        _BUILDERS[family](folders[family])
    return folders


@pytest.fixture(scope="module")
def encoders(checkpoints: dict[str, Path]) -> dict[str, ClipFamilyEncoder]:
    # batch_size 2 so that sorting by length and putting rows back spans several batches.
    return {
        family: ClipFamilyEncoder.from_pretrained(str(folder), device="cpu", batch_size=2)
        for family, folder in checkpoints.items()
    }


def _images() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    sizes = [(32, 32), (48, 80), (120, 40), (7, 9), (64, 64)]
    return [
        torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator) for h, w in sizes
    ]


def _assert_unit_rows(vectors: np.ndarray, n: int, dim: int) -> None:
    assert vectors.shape == (n, dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_info_describes_the_checkpoint(
    family: str, encoders: dict[str, ClipFamilyEncoder], checkpoints: dict[str, Path]
) -> None:
    encoder = encoders[family]
    assert isinstance(encoder, Encoder)
    info = encoder.info
    assert info.model_id == checkpoints[family].name
    assert info.joint_dim == info.visual_dim == PROJECTION_DIM[family]
    assert len(info.version) == 12
    assert set(info.version) <= set("0123456789abcdef")


@pytest.mark.parametrize("family", FAMILIES)
def test_texts_encode_to_unit_rows_in_input_order(
    family: str, encoders: dict[str, ClipFamilyEncoder]
) -> None:
    encoder = encoders[family]
    batch = encoder.encode_texts(TEXTS)
    _assert_unit_rows(batch, len(TEXTS), encoder.info.joint_dim)
    one_by_one = np.concatenate([encoder.encode_texts([text]) for text in TEXTS])
    np.testing.assert_allclose(batch, one_by_one, atol=1e-5)
    # Otherwise the order check above would prove nothing.
    assert len({row.tobytes() for row in batch.round(4)}) == len(TEXTS)


@pytest.mark.parametrize("family", FAMILIES)
def test_warm_up_leaves_the_vectors_as_they_were(
    family: str, encoders: dict[str, ClipFamilyEncoder]
) -> None:
    encoder = encoders[family]
    before_texts, before_images = encoder.encode_texts(TEXTS), encoder.encode_images(_images())
    encoder.warm_up()
    np.testing.assert_allclose(encoder.encode_texts(TEXTS), before_texts, atol=1e-5)
    np.testing.assert_allclose(
        encoder.encode_images(_images()).joint, before_images.joint, atol=1e-5
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_text_longer_than_the_model_allows_is_truncated(
    family: str, encoders: dict[str, ClipFamilyEncoder]
) -> None:
    encoder = encoders[family]
    long_texts = ["red dress " * 200, "红色连衣裙" * 200]
    _assert_unit_rows(encoder.encode_texts(long_texts), 2, encoder.info.joint_dim)


@pytest.mark.parametrize("family", FAMILIES)
def test_images_of_any_size_encode_to_unit_rows_in_input_order(
    family: str, encoders: dict[str, ClipFamilyEncoder]
) -> None:
    encoder = encoders[family]
    images = _images()
    vectors = encoder.encode_images(images)
    assert vectors.visual is vectors.joint
    _assert_unit_rows(vectors.joint, len(images), encoder.info.joint_dim)
    one_by_one = np.concatenate([encoder.encode_images([image]).joint for image in images])
    np.testing.assert_allclose(vectors.joint, one_by_one, atol=1e-5)
    assert len({row.tobytes() for row in vectors.joint.round(4)}) == len(images)


@pytest.mark.parametrize("family", FAMILIES)
def test_vectors_match_the_checkpoint_used_directly(
    family: str, checkpoints: dict[str, Path], encoders: dict[str, ClipFamilyEncoder]
) -> None:
    from transformers import AutoModel, AutoProcessor

    folder = checkpoints[family]
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    padding = "max_length" if family == "siglip" else True
    texts = TEXTS[:3]
    with torch.inference_mode():
        text_inputs = processor.tokenizer(
            texts, padding=padding, truncation=True, max_length=TEXT_MAX_LENGTH, return_tensors="pt"
        )
        text = model.get_text_features(**text_inputs).pooler_output
        pixels = processor.image_processor(images=_images(), return_tensors="pt")
        image = model.get_image_features(**pixels).pooler_output
    text = torch.nn.functional.normalize(text, dim=-1).numpy()
    image = torch.nn.functional.normalize(image, dim=-1).numpy()
    encoder = encoders[family]
    np.testing.assert_allclose(encoder.encode_texts(texts), text, atol=1e-5)
    np.testing.assert_allclose(encoder.encode_images(_images()).joint, image, atol=1e-5)


def test_empty_batches_give_empty_arrays(encoders: dict[str, ClipFamilyEncoder]) -> None:
    encoder = encoders["clip"]
    dim = encoder.info.joint_dim
    assert encoder.encode_texts([]).shape == (0, dim)
    empty = encoder.encode_images([])
    assert empty.joint.shape == empty.visual.shape == (0, dim)
    assert empty.joint.dtype == np.float32


@pytest.mark.parametrize(
    "image",
    [
        torch.zeros((3, 8, 8), dtype=torch.float32),
        torch.zeros((8, 8, 3), dtype=torch.uint8),
        torch.zeros((1, 8, 8), dtype=torch.uint8),
        torch.zeros((3, 0, 8), dtype=torch.uint8),
    ],
    ids=["float", "channels-last", "grey", "empty"],
)
def test_images_outside_the_contract_are_refused(
    image: torch.Tensor, encoders: dict[str, ClipFamilyEncoder]
) -> None:
    with pytest.raises(ValueError, match="image 1"):
        encoders["clip"].encode_images([torch.zeros((3, 8, 8), dtype=torch.uint8), image])


def test_version_follows_the_weights_not_the_location(
    checkpoints: dict[str, Path], tmp_path: Path, encoders: dict[str, ClipFamilyEncoder]
) -> None:
    from transformers import CLIPModel

    original = encoders["clip"].info
    copy = shutil.copytree(checkpoints["clip"], tmp_path / "copy")
    same = ClipFamilyEncoder.from_pretrained(str(copy), device="cpu").info
    assert (same.model_id, same.version) == ("copy", original.version)

    model = CLIPModel.from_pretrained(copy, local_files_only=True)
    with torch.no_grad():
        model.text_projection.weight.mul_(2.0)
    model.save_pretrained(copy)
    changed = ClipFamilyEncoder.from_pretrained(str(copy), device="cpu").info
    assert changed.version != original.version


def test_hub_id_loads_from_the_cache_only(
    checkpoints: dict[str, Path], tmp_path: Path, encoders: dict[str, ClipFamilyEncoder]
) -> None:
    # The hub cache layout: models--{org}--{name}/refs/main and snapshots/{commit}/.
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--shop--tiny-clip"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(checkpoints["clip"], repo / "snapshots" / commit)

    encoder = ClipFamilyEncoder.from_pretrained("shop/tiny-clip", cache_dir=str(tmp_path))
    assert encoder.info.model_id == "shop/tiny-clip"
    assert encoder.info.version == encoders["clip"].info.version

    with pytest.raises(FileNotFoundError, match="never downloads"):
        ClipFamilyEncoder.from_pretrained("shop/not-cached", cache_dir=str(tmp_path))


@pytest.mark.parametrize("family", FAMILIES)
def test_patch_tokens_are_the_regions_in_the_joint_space(
    family: str, encoders: dict[str, ClipFamilyEncoder], checkpoints: dict[str, Path]
) -> None:
    encoder = encoders[family]
    images = _images()
    vectors = encoder.encode_images(images)
    if family == "siglip":  # its patches are pooled by a head of its own, with no projection
        assert not encoder.gives_regions and vectors.regions is None
        return
    assert encoder.gives_regions and vectors.regions is not None
    # The tiny test tower: 32 by 32 inputs in patches of 8, so 16 patches a photo.
    assert vectors.regions.shape == (len(images), 16, encoder.info.joint_dim)
    np.testing.assert_allclose(np.linalg.norm(vectors.regions, axis=2), 1.0, atol=1e-5)
    assert vectors.region_confidence is None
    empty = encoder.encode_images([])
    assert empty.regions is not None and empty.regions.shape[0] == 0
    # An encoder for queries only (the query worker's) skips them; its vectors are the same.
    without = ClipFamilyEncoder.from_pretrained(str(checkpoints[family]), regions=False)
    assert not without.gives_regions
    got = without.encode_images(images)
    assert got.regions is None
    np.testing.assert_allclose(got.joint, vectors.joint, atol=1e-5)
