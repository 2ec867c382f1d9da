"""Posterior uncertainty: where in an image the encoder is unsure of its code.

The encoder returns a Gaussian posterior q(z|x), not a point. Decoding several samples
z ~ q(z|x) of one image and looking at the per-pixel spread shows which parts of the
picture the code pins down (low spread) and which it leaves open (high spread, typically
edges and the parts that move with pose or light). Rows: images of ``split``; columns:
original | mean of the decoded samples | per-pixel standard deviation, scaled to each image's
own maximum so that its shape is visible (the maxima are in the caption). The mean standard
deviation over all pixels is logged as ``uncertainty/pixel_std``.
"""

from __future__ import annotations

import torch

from callbacks.base import Figures, Picture, VisualCallback, display_scale
from datamodules.grouped import GroupedDataModule
from dcign.model.interface import CodeModel
from dcign.scoring.figures import image_grid


class PosteriorUncertainty(VisualCallback):
    """One grid, logged as ``uncertainty/posterior``."""

    key = "uncertainty"

    def __init__(
        self,
        output_dir: str,
        every_n_epochs: int = 1,
        num_images: int = 4,
        samples: int = 16,
        seed: int = 0,
        split: str = "val",
    ) -> None:
        if num_images < 1 or samples < 2:
            raise ValueError("PosteriorUncertainty needs num_images >= 1 and samples >= 2.")
        super().__init__(output_dir, every_n_epochs, seed, split)
        self.num_images = num_images
        self.samples = samples

    def figures(self, datamodule: GroupedDataModule, pl_module: CodeModel) -> Figures:
        images = datamodule.sample_up_to(self.split, self.num_images, self.seed).images
        images = images.to(pl_module.device)
        mu, logvar = pl_module.encode(images)
        # Noise from a seeded CPU generator: the same draws every epoch and on every device.
        generator = torch.Generator().manual_seed(self.seed)
        noise = torch.randn((self.samples, *mu.shape), generator=generator).to(mu)
        codes = mu + (0.5 * logvar).exp() * noise  # [K, N, D]
        decoded = pl_module.decode(codes.flatten(0, 1)).unflatten(0, codes.shape[:2]).float()
        mean, std = decoded.mean(dim=0), decoded.std(dim=0, unbiased=False)
        peaks = std.flatten(1).amax(dim=1)
        shown = std / peaks.clamp_min(1e-8)[:, None, None, None]
        rows = [torch.stack(columns) for columns in zip(images, mean, shown, strict=True)]
        grid = image_grid(rows, scale=display_scale(images.shape[-1]))
        caption = (
            f"original | mean of {self.samples} decoded samples z ~ q(z|x) | per-pixel std, "
            f"scaled to its maximum ({', '.join(f'{p:.3f}' for p in peaks.tolist())})"
        )
        return Figures(
            pictures=[Picture("posterior", grid, caption)],
            scalars={"pixel_std": float(std.mean())},
        )
