"""Encoders: texts and images to L2-normalised vectors, behind one interface.

The heavy backends (offline default, CLIP family, torchvision backbones) are imported from
their modules on demand so that importing this package stays cheap.
"""

from shopvec.encoders.base import Encoder, EncoderInfo, ImageBatchVectors, l2_normalise
from shopvec.encoders.hashing import HashingEncoder

__all__ = ["Encoder", "EncoderInfo", "HashingEncoder", "ImageBatchVectors", "l2_normalise"]
