"""What the explorer page does, as plain functions over a checkpoint and its data.

An :class:`ExplorerSession` holds a trained DC-IGN (and the networks it is compared with), the
data set rebuilt from the run config stored in the checkpoint (as ``dcign.evaluate`` does), a
gallery of test images, and the sliders of :mod:`dcign.explorer.controls`. Every request of the
page is one method here: pick or upload an image, re-render it with moved sliders (DC-IGN, each
comparison network such as the baseline and, for the procedural data sets, the true render with
each network's error), sample the posterior, export a sweep. The HTTP layer
(:mod:`dcign.explorer.server`) only turns these into JSON.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from dcign.errors import UnreadableImageError
from dcign.explorer.controls import FactorSlider, IntrinsicSlider, intrinsic_sliders
from dcign.explorer.data import ExplorerData
from dcign.model.layout import INTRINSIC
from dcign.model.module import DCIGN
from dcign.run.restore import data_config, load_checkpoint
from dcign.run.training import build
from dcign.scoring.comparison_latents import choose_comparison_latents
from dcign.scoring.latent_fit import LatentFit

log = logging.getLogger(__name__)

# Uploads larger than this are refused before decoding (a photo of a few MB is plenty).
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
# ... and so are images with more pixels than this (a decompression bomb is small on disk).
MAX_UPLOAD_PIXELS = 40_000_000
# Images kept for later requests (gallery picks and uploads), oldest forgotten first.
KEPT_IMAGES = 64


class UploadError(ValueError):
    """An uploaded file the explorer cannot use; its message is shown in the page."""


@dataclass
class Picked:
    """An image being edited: its pixels, every network's posterior mean, and what is known."""

    image: torch.Tensor  # [C, H, W] in [0, 1]
    codes: dict[str, torch.Tensor]  # network name -> posterior mean [D], "dcign" first
    logvar: torch.Tensor  # [D], DC-IGN's
    factors: torch.Tensor | None  # true factor values (gallery images only)
    identity: int | None


def png_data_url(image: torch.Tensor | np.ndarray, scale: int = 1) -> str:
    """An image ``[C, H, W]`` in [0, 1] (or uint8 ``[H, W]``) as a ``data:image/png`` URL."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image, scale)).decode()


def png_bytes(image: torch.Tensor | np.ndarray, scale: int = 1) -> bytes:
    buffer = io.BytesIO()
    to_pil(image, scale).save(buffer, format="PNG")
    return buffer.getvalue()


def to_pil(image: torch.Tensor | np.ndarray, scale: int = 1) -> Image.Image:
    """An image ``[C, H, W]`` in [0, 1] or a uint8 array ``[H, W(, 3)]`` as a PIL image."""
    if isinstance(image, torch.Tensor):
        array = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
        array = array.permute(1, 2, 0).numpy()
        array = array[..., 0] if array.shape[-1] == 1 else array
    else:
        array = image
    picture = Image.fromarray(array)
    if scale > 1:
        picture = picture.resize(
            (picture.width * scale, picture.height * scale), Image.Resampling.NEAREST
        )
    return picture


def strip(images: list[torch.Tensor], pad: int = 1) -> np.ndarray:
    """Images ``[C, H, W]`` side by side on white, as uint8 ``[H, W'(, 3)]``."""
    channels, height, width = images[0].shape
    canvas = torch.ones(channels, height + 2 * pad, len(images) * (width + pad) + pad)
    for k, image in enumerate(images):
        left = pad + k * (width + pad)
        canvas[:, pad : pad + height, left : left + width] = image.float().cpu()
    array = (canvas.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return array[..., 0] if channels == 1 else array


class ExplorerSession:
    """A checkpoint, its data and sliders; thread-safe for one model on the CPU."""

    def __init__(
        self,
        model: DCIGN,
        datamodule: ExplorerData,
        gallery_size: int = 24,
        reference_images: int = 512,
        intrinsic_directions: int = 3,
        seed: int = 0,
    ) -> None:
        self.model = model.eval()
        self.datamodule = datamodule
        self._lock = threading.Lock()
        self._picked: OrderedDict[str, Picked] = OrderedDict()
        # The sliders' value -> latents maps are fitted on validation identities: the test
        # images shown in the gallery are never the data a map was fitted on.
        references = datamodule.reference_images(reference_images, seed + 1)
        with torch.no_grad():
            codes = {name: net.encode(references.images)[0] for name, net in model.networks.items()}
        chosen = _comparison_latents(model, datamodule)
        # The networks the page shows, in order: DC-IGN, then each comparison whose latents
        # per factor could be chosen (the others have no slider to follow).
        self.shown_networks = ["dcign", *chosen]
        self.factor_sliders = [
            self._factor_slider(name, dims, codes, references.factors, chosen)
            for name, dims in model.layout.items()
            if name != INTRINSIC
        ]
        intrinsic = model.layout.get(INTRINSIC, [])
        self.intrinsic_sliders: list[IntrinsicSlider] = (
            intrinsic_sliders(codes["dcign"], intrinsic, intrinsic_directions) if intrinsic else []
        )
        self.gallery = datamodule.sample_up_to("test", gallery_size, seed)

    # ----------------------------------------------------------------- building
    @classmethod
    def from_checkpoint(cls, path: str, cache_dir: str | None = None, **options: Any):
        """The session of a checkpoint written by ``train.py`` (weights only)."""
        model, run_config = load_checkpoint(path)
        dataset_cfg = data_config(OmegaConf.create({"paths": {"cache_dir": cache_dir}}), run_config)
        datamodule = build(dataset_cfg, layout=model.hparams.layout)
        datamodule.prepare_data()
        datamodule.setup("test")
        return cls(model, datamodule, **options)

    def _factor_slider(
        self,
        name: str,
        dims: list[int],
        codes: Mapping[str, torch.Tensor],
        values: torch.Tensor,
        chosen: Mapping[str, torch.Tensor],
    ) -> FactorSlider:
        """A factor's slider: DC-IGN's group and each comparison's latents chosen for it."""
        column = self.datamodule.factor_names.index(name)
        factor = self.datamodule.factors[column]
        value = values[:, column]
        type_id = list(self.model.layout).index(name)
        comparisons = {
            network: LatentFit.fit(
                codes[network],
                value,
                torch.nonzero(latents[type_id]).flatten().tolist(),
                factor.periodic,
            )
            for network, latents in chosen.items()
        }
        return FactorSlider(
            name=name,
            column=column,
            periodic=factor.periodic,
            low=min(factor.values),
            high=max(factor.values),
            degrees=factor.unit == "rad",
            dcign=LatentFit.fit(
                codes["dcign"],
                value,
                dims,
                factor.periodic,
                angular=factor.periodic and name in self.model.angle_factors.get("dcign", ()),
            ),
            comparisons=comparisons,
        )

    # ----------------------------------------------------------------- the page's requests
    def info(self) -> dict[str, Any]:
        """Sliders, gallery thumbnails and what the page can offer for this data set."""
        return {
            "sliders": [s.spec() for s in (*self.factor_sliders, *self.intrinsic_sliders)],
            "gallery": [
                {"token": f"g{k}", "src": png_data_url(image, 2)}
                for k, image in enumerate(self.gallery.images)
            ],
            "networks": self.shown_networks,
            "truth": self.datamodule.can_render,
            "image_size": self.datamodule.image_size,
            "max_upload_bytes": MAX_UPLOAD_BYTES,
        }

    def pick(self, token: str) -> dict[str, Any]:
        """Start editing a gallery image (``g<k>``) or an earlier upload."""
        picked = self._get(token)
        return self._described(token, picked)

    def upload(self, data: bytes) -> dict[str, Any]:
        """Convert an uploaded file as the data set converts its images, and start editing it."""
        image = convert_upload(data, self.datamodule.convert_image)
        picked = self._encode(image, None, None)
        token = f"u{id(picked):x}"
        self._keep(token, picked)
        return self._described(token, picked)

    def render(self, token: str, positions: Mapping[str, float]) -> dict[str, Any]:
        """Re-render with the moved sliders: each shown network and, where known, the truth.

        ``views`` maps a network name to its re-render; ``error`` (with a truth) to its MSE.
        For a gallery image, ``rank`` says where each re-render puts the picked face among
        every test identity at the data's nearest view (1: recognised as itself, as "identity
        kept" counts it), out of ``lineup`` faces.
        """
        picked = self._get(token)
        codes, values = self._edited(picked, positions)
        networks = self.model.networks
        with torch.no_grad(), self._lock:
            images = {name: networks[name].decode(code[None])[0] for name, code in codes.items()}
        result: dict[str, Any] = {
            "views": {name: png_data_url(image, 4) for name, image in images.items()}
        }
        truth = self._truth(picked, values)
        if truth is not None:
            result["truth"] = png_data_url(truth, 4)
            result["error"] = {name: _mse(image, truth) for name, image in images.items()}
        if picked.identity is not None and picked.factors is not None:
            result.update(self._identity_ranks(picked, values, images))
        return result

    def _identity_ranks(
        self, picked: Picked, values: Mapping[str, float], images: Mapping[str, torch.Tensor]
    ) -> dict[str, Any]:
        """Rank of the picked identity among the test identities at the nearest data view,
        for each network's picture (by pixel MSE to each true image)."""
        point = [
            values.get(name, float(picked.factors[column]))
            for column, name in enumerate(self.datamodule.factor_names)
        ]
        lineup = self.datamodule.split_info("test").gallery.at(torch.tensor([point]))
        faces, ids = lineup.images[0], lineup.identity[0]
        present = ids >= 0
        ranks = {}
        for name, image in images.items():
            distance = (faces - image.float()).square().flatten(1).mean(dim=1)
            own = distance[ids == picked.identity]
            ranks[name] = int((distance[present] < own).sum()) + 1 if len(own) else None
        return {"rank": ranks, "lineup": int(present.sum())}

    def samples(self, token: str, positions: Mapping[str, float], count: int = 16) -> dict:
        """Decoded posterior samples around the edited code and their per-pixel spread.

        The posterior's width is the image's own (its encoder's sigma): the spread shows where
        the network is unsure of what it re-renders.
        """
        picked = self._get(token)
        code = self._edited(picked, positions)[0]["dcign"]
        generator = torch.Generator().manual_seed(0)
        noise = torch.randn(count, code.numel(), generator=generator)
        with torch.no_grad(), self._lock:
            decoded = self.model.decode(code + noise * torch.exp(0.5 * picked.logvar))
        spread = decoded.std(dim=0)
        shown = spread / spread.max().clamp_min(1e-6)
        return {
            "samples": [png_data_url(image, 2) for image in decoded[:8]],
            "std": png_data_url(shown, 4),
            "max_std": float(spread.max()),
        }

    def sweep(
        self, token: str, positions: Mapping[str, float], key: str, steps: int, fmt: str
    ) -> tuple[bytes, str]:
        """DC-IGN's re-renderings as ``key`` moves over its range: a GIF or a PNG strip."""
        if fmt not in ("gif", "png"):
            raise UploadError(f"The sweep format must be gif or png, got {fmt!r}.")
        if not 2 <= steps <= 64:
            raise UploadError(f"A sweep has 2 to 64 steps, got {steps}.")
        spec = next((s.spec() for s in self._sliders() if s.key == key), None)
        if spec is None:
            raise UploadError(f"No slider named {key!r}.")
        picked = self._get(token)
        frames = []
        for shown in np.linspace(float(spec["min"]), float(spec["max"]), steps):
            code = self._edited(picked, {**positions, key: float(shown)})[0]["dcign"]
            with torch.no_grad(), self._lock:
                frames.append(self.model.decode(code[None])[0])
        scale = max(1, 128 // frames[0].shape[-1])
        buffer = io.BytesIO()
        if fmt == "png":
            to_pil(strip(frames), scale).save(buffer, format="PNG")
            return buffer.getvalue(), "image/png"
        pictures = [to_pil(frame, scale) for frame in frames]
        pictures[0].save(
            buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=120, loop=0
        )
        return buffer.getvalue(), "image/gif"

    # ----------------------------------------------------------------- internals
    def _sliders(self) -> list[FactorSlider | IntrinsicSlider]:
        return [*self.factor_sliders, *self.intrinsic_sliders]

    def _get(self, token: str) -> Picked:
        with self._lock:
            picked = self._picked.get(token)
        if picked is not None:
            return picked
        if (
            token.startswith("g")
            and token[1:].isdigit()
            and int(token[1:]) < len(self.gallery.images)
        ):
            k = int(token[1:])
            picked = self._encode(
                self.gallery.images[k],
                self.gallery.factors[k],
                int(self.gallery.identity[k]),
            )
            self._keep(token, picked)
            return picked
        raise UploadError(f"Unknown image {token!r}: pick one from the gallery or upload one.")

    def _keep(self, token: str, picked: Picked) -> None:
        with self._lock:
            self._picked[token] = picked
            while len(self._picked) > KEPT_IMAGES:
                self._picked.popitem(last=False)

    def _encode(
        self, image: torch.Tensor, factors: torch.Tensor | None, identity: int | None
    ) -> Picked:
        with torch.no_grad(), self._lock:
            posteriors = {
                name: self.model.networks[name].encode(image[None]) for name in self.shown_networks
            }
        codes = {name: mu[0] for name, (mu, _) in posteriors.items()}
        return Picked(image, codes, posteriors["dcign"][1][0], factors, identity)

    def _described(self, token: str, picked: Picked) -> dict[str, Any]:
        """The image, its reconstructions and where each slider starts for it."""
        start = {}
        for slider in self.factor_sliders:
            value = (
                float(picked.factors[slider.column])
                if picked.factors is not None
                else slider.dcign.value(picked.codes["dcign"])
            )
            start[slider.name] = slider.to_display(min(max(value, slider.low), slider.high))
        start.update({s.key: 0.0 for s in self.intrinsic_sliders})
        return {
            "token": token,
            "input": png_data_url(picked.image, 4),
            "start": start,
            **self.render(token, {}),
        }

    def _edited(
        self, picked: Picked, positions: Mapping[str, float]
    ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Every shown network's code with the moved sliders applied, and the factor values
        they stand for. Intrinsic sliders move DC-IGN's code only: an entangled code has no
        intrinsic part to move."""
        codes = {name: code.clone() for name, code in picked.codes.items()}
        values = (
            {s.name: float(picked.factors[s.column]) for s in self.factor_sliders}
            if picked.factors is not None
            else {}
        )
        known = {s.key for s in self._sliders()}
        unknown = sorted(set(positions) - known)
        if unknown:
            raise UploadError(f"No slider named {unknown}; the sliders are {sorted(known)}.")
        for slider in self.factor_sliders:
            if slider.name not in positions:
                continue
            value = slider.from_display(float(positions[slider.name]))
            values[slider.name] = value
            fits = {"dcign": slider.dcign, **slider.comparisons}
            codes = {name: fits[name].apply(code, value) for name, code in codes.items()}
        for slider in self.intrinsic_sliders:
            if slider.key in positions:
                codes["dcign"] = slider.apply(codes["dcign"], float(positions[slider.key]))
        return codes, values

    def _truth(self, picked: Picked, values: Mapping[str, float]) -> torch.Tensor | None:
        """The true render of the picked identity at ``values`` (procedural data, gallery)."""
        if picked.identity is None or picked.factors is None:
            return None
        point = {
            name: values.get(name, float(picked.factors[column]))
            for column, name in enumerate(self.datamodule.factor_names)
        }
        return self.datamodule.render_truth(picked.identity, point)


def convert_upload(data: bytes, convert: Callable[[BinaryIO], torch.Tensor]) -> torch.Tensor:
    """An uploaded file as the model's input ``[C, S, S]``: checked here (size, a readable
    image), then converted by ``convert``, the data set's own conversion of its files."""
    if not data:
        raise UploadError("The file is empty. Choose a PNG or JPEG image.")
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(
            f"The file has {len(data) / 1e6:.1f} MB; the explorer takes images up to "
            f"{MAX_UPLOAD_BYTES / 1e6:.0f} MB. Resize it first."
        )
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
    except Exception as error:  # noqa: BLE001 - any decoder failure is the same answer here
        raise UploadError(
            f"This file is not an image the explorer can read ({type(error).__name__}). "
            "Choose a PNG, JPEG, GIF, BMP or WebP image."
        ) from error
    if width * height > MAX_UPLOAD_PIXELS:
        raise UploadError(
            f"The image has {width} x {height} pixels; the explorer takes up to "
            f"{MAX_UPLOAD_PIXELS / 1e6:.0f} million. Resize it first."
        )
    try:
        return convert(io.BytesIO(data))
    except UnreadableImageError as error:
        raise UploadError(f"The image could not be decoded: {error}.") from error


def _comparison_latents(model: DCIGN, datamodule: Any) -> dict[str, torch.Tensor]:
    """Each comparison network's latents per group type ``[T, D]``, chosen on the val split
    as evaluation chooses them; a network with none chosen is left out."""
    if not model.comparisons:
        return {}
    return choose_comparison_latents(model, datamodule, "test")


def _mse(image: torch.Tensor, truth: torch.Tensor) -> float:
    return float((image.float() - truth.float()).square().mean())
