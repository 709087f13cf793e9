"""The Inception-v3 network of FID (Heusel et al. 2017), as pytorch-fid computes it.

FID's standard features are the 2048 pool3 activations of the TensorFlow Inception-v3
graph of 2015-12-05. pytorch-fid ported its weights to PyTorch
(``pt_inception-2015-12-05-6726825d.pth``) and matched the graph's few differences from
torchvision's Inception-v3: average pools that do not count padding, a max pool in the
last block's pool branch, 1008 classes. This module builds that network (parameter
names as in the weights file, so it loads as it is), without torchvision, and finds the
weights: in ``$VAEKIT_DATA_DIR``, in the cache, else by a verified download (sha256).

Inputs are images in [0, 1] of any size with 1 or 3 channels: grey images are repeated
to RGB, resized to 299 x 299 (bilinear) and scaled to [-1, 1], as pytorch-fid does.

What was verified here (no network): the architecture has the parameter count of
torchvision's Inception-v3 less its auxiliary head, with 1008 classes (23,850,960), and
it loads a state dict of the weights file's names and shapes; the download code runs
against a local server. The weights themselves could not be fetched here, so FID values
were not compared with pytorch-fid's.

Example:
    >>> net = InceptionFeatures()                  # doctest: +SKIP
    >>> net.features(torch.rand(4, 1, 28, 28)).shape  # doctest: +SKIP
    torch.Size([4, 2048])
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaekit.data.core import cache_dir, data_dir
from vaekit.data.download import RemoteFile, file_digest, locate
from vaekit.storage import RunError

__all__ = ["WEIGHTS", "MIRRORS", "FIDInceptionV3", "inception_weights", "InceptionFeatures"]

# pytorch-fid's port of the 2015-12-05 TensorFlow weights. The file name carries the first
# 8 hex digits of its sha256 (torch.hub's convention), which the full digest extends.
WEIGHTS = RemoteFile(
    "pt_inception-2015-12-05-6726825d.pth",
    sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
)
MIRRORS = ["https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"]


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (eps 0.001), ReLU."""

    def __init__(self, cin: int, cout: int, **kwargs: object) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)  # type: ignore[arg-type]
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg(x: Tensor) -> Tensor:
    # TensorFlow's average pool divides by the number of real (not padded) pixels.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b1, b5, b3, self.branch_pool(_avg(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for i in range(1, 6):
            bd = getattr(self, f"branch7x7dbl_{i}")(bd)
        return torch.cat([b1, b7, bd, self.branch_pool(_avg(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """The last blocks; ``max_pool``: the 2015 graph's final block pools by max, not mean."""

    def __init__(self, cin: int, max_pool: bool = False) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg(x)
        return torch.cat([b1, b3, bd, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 as FID's weights expect it; :meth:`pool3` gives the 2048 features."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        # Unused for the features, but part of the weights file (1008 ImageNet classes).
        self.fc = nn.Linear(2048, 1008)

    def pool3(self, x: Tensor) -> Tensor:
        """``(N, 2048)`` pool3 features of images ``(N, C, H, W)`` with values in [0, 1]."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def inception_weights(
    path: str | os.PathLike[str] | None = None,
    *,
    mirrors: list[str] | None = None,
    spec: RemoteFile = WEIGHTS,
) -> Path:
    """The verified weights file: ``path`` (a file, or a folder holding it), else one in
    ``$VAEKIT_DATA_DIR`` or the cache (``VAEKIT_CACHE_DIR``/inception), else downloaded."""
    search: list[Path | None] = []
    if path is not None:
        p = Path(path).expanduser()
        if p.is_file():
            spec = RemoteFile(p.name, md5=spec.md5, sha256=spec.sha256)
            p = p.parent
        search.append(p)
    search.append(data_dir(None))
    return locate(
        spec,
        search,
        MIRRORS if mirrors is None else mirrors,
        cache_dir() / "inception",
        what="FID Inception-v3 weights",
    )


class InceptionFeatures:
    """FID's standard feature network: pool3 of Inception-v3 (2048 features)."""

    name = "inception"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 50,
    ) -> None:
        weights = inception_weights(path)
        net = FIDInceptionV3()
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except (RuntimeError, OSError, ValueError) as e:
            raise RunError(
                f"{weights}: not loadable as FID Inception-v3 weights ({str(e).splitlines()[0]})"
            ) from None
        self.net = net.eval().to(device)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.description = {
            "name": "inception",
            "network": "Inception-v3 pool3 (2048 features), pytorch-fid's port of the "
            "2015-12-05 TensorFlow weights: the standard FID network",
            "weights": str(weights),
            "sha256": spec_sha(weights),
        }

    @torch.inference_mode()
    def features(self, x: Tensor) -> Tensor:
        """``(N, 2048)`` features of images ``(N, C, H, W)`` in [0, 1] (on the CPU)."""
        out = [self.net.pool3(b.to(self.device).float()).cpu() for b in x.split(self.batch_size)]
        return torch.cat(out)


def spec_sha(path: Path) -> str:
    return file_digest(path, "sha256")
