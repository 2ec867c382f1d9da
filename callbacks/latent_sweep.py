"""Latent sweeps: re-render images while one latent group moves (paper Figures 4, 5, 8).

For a few fixed images of ``split``, every named latent group is moved over the range the
encoder actually uses for it (measured on a reference set of the same split's images) while all
other latents stay at the image's own code. If the azimuth latent has learned azimuth, its row
shows the object turning. A one-latent group moves along a line, a two-latent group along the
path its codes trace as its factor changes (around the loop of a full turn), and the
``intrinsic`` group is shown through its highest-variance dimensions.
"""

from __future__ import annotations

import math

import torch

from callbacks.base import Figures, Picture, VisualCallback, display_scale
from datamodules.grouped import GroupedDataModule
from dcign.model.interface import CodeModel
from dcign.scoring.figures import image_grid


class LatentSweep(VisualCallback):
    """One grid per latent group; rows: images; columns: original, reconstruction, sweep.

    Logged as ``sweeps/{group}`` and written as ``epoch{E:03d}_{group}.png``.
    """

    key = "sweeps"

    def __init__(
        self,
        output_dir: str,
        every_n_epochs: int = 1,
        num_images: int = 4,
        steps: int = 9,
        intrinsic_dims: int = 3,
        reference_images: int = 64,
        seed: int = 0,
        split: str = "val",
    ) -> None:
        if num_images < 1 or steps < 2:
            raise ValueError("LatentSweep needs num_images >= 1 and steps >= 2.")
        super().__init__(output_dir, every_n_epochs, seed, split)
        self.num_images = num_images
        self.steps = steps
        self.intrinsic_dims = intrinsic_dims
        self.reference_images = reference_images

    def figures(self, datamodule: GroupedDataModule, pl_module: CodeModel) -> Figures:
        device = pl_module.device
        count = max(self.num_images, self.reference_images)
        images = datamodule.sample_up_to(self.split, count, self.seed).images.to(device)
        # The sample is ordered by identity: spread the shown images over it, so the rows show
        # different identities and views rather than the first identity's first views.
        picks = torch.linspace(0, len(images) - 1, self.num_images).round().long()
        shown = images[picks]
        codes, _ = pl_module.encode(shown)
        recon = pl_module.decode(codes)
        # Which latents to sweep and along which path is read off the fixed reference images.
        sample = datamodule.reference_images(self.reference_images, self.seed)
        reference, _ = pl_module.encode(sample.images.to(device))
        scale = display_scale(images.shape[-1])
        figures = Figures()
        for name, dims in self._swept_dims(pl_module.layout, reference).items():
            truth = (
                sample.factors[:, datamodule.factor_names.index(name)].to(device)
                if name in datamodule.factor_names
                else None
            )
            paths = self._paths(reference, dims, truth)  # [steps, len(dims)]
            rows = []
            for image, rec, code in zip(shown, recon, codes, strict=True):
                moved = code.expand(self.steps, -1).clone()
                moved[:, dims] = paths
                rows.append(torch.cat([image[None], rec[None], pl_module.decode(moved)]))
            caption = f"{name} sweep: original | recon | sweep"
            figures.pictures.append(Picture(name, image_grid(rows, scale=scale), caption))
        return figures

    def _swept_dims(self, layout: dict, reference: torch.Tensor) -> dict[str, list[int]]:
        """Groups of <= 2 latents as they are; bigger groups by their top-variance latents."""
        swept = {}
        for name, dims in layout.items():
            if len(dims) <= 2:
                swept[name] = list(dims)
                continue
            variance = reference[:, dims].var(dim=0)
            top = variance.argsort(descending=True)[: self.intrinsic_dims].tolist()
            for rank, index in enumerate(top):
                swept[f"{name}_top{rank + 1}_z{dims[index]}"] = [dims[index]]
        return swept

    def _paths(
        self, reference: torch.Tensor, dims: list[int], truth: torch.Tensor | None
    ) -> torch.Tensor:
        """``[steps, len(dims)]`` codes to sweep through.

        One latent moves along its range. A 2-latent group follows the path the encoder traces
        as its factor changes - the mean code of the reference images at each value of the
        factor, in order - so a full turn is swept around its loop and a partial one (the
        faces' 172 degrees) along its arc, never through codes the encoder does not use; without
        factor values it goes around the circle the codes lie on.
        """
        values = reference[:, dims]
        if len(dims) == 1:
            low, high = values.min(), values.max()
            margin = 0.1 * (high - low) + 1e-3
            return torch.linspace(low - margin, high + margin, self.steps, device=values.device)[
                :, None
            ]
        if truth is not None and len(torch.unique(truth)) > 1:
            levels = torch.unique(truth)  # sorted
            means = torch.stack([values[truth == level].mean(dim=0) for level in levels])
            position = torch.linspace(0, len(levels) - 1, self.steps, device=values.device)
            lower = position.floor().long().clamp(max=len(levels) - 2)
            weight = (position - lower)[:, None]
            return means[lower] * (1 - weight) + means[lower + 1] * weight
        centre = values.mean(dim=0)
        radius = (values - centre).norm(dim=1).mean()
        angles = torch.linspace(0, 2 * math.pi, self.steps + 1, device=values.device)[:-1]
        return centre + radius * torch.stack([angles.cos(), angles.sin()], dim=1)
