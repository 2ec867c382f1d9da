"""Latent sweeps: re-render test images while one latent group moves (paper Figures 4, 5, 8).

For a few fixed test images, every named latent group is moved over the range the encoder
actually uses for it (measured on a reference set of test images) while all other latents stay
at the image's own code. If the azimuth latent has learned azimuth, its row shows the object
turning. A one-latent group moves along a line, a two-latent group (a full-turn azimuth) around
its circle, and the ``intrinsic`` group is shown through its highest-variance dimensions.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytorch_lightning as pl
import torch

from callbacks.images import image_grid, log_image, save_png

log = logging.getLogger(__name__)


class LatentSweep(pl.Callback):
    """Every ``every_n_epochs`` validation epochs, on global rank 0, draw one grid per group."""

    def __init__(
        self,
        output_dir: str,
        every_n_epochs: int = 1,
        num_images: int = 4,
        steps: int = 9,
        intrinsic_dims: int = 3,
        reference_images: int = 64,
        seed: int = 0,
    ) -> None:
        if every_n_epochs < 1 or num_images < 1 or steps < 2:
            raise ValueError("LatentSweep needs every_n_epochs >= 1, num_images >= 1, steps >= 2.")
        self.output_dir = Path(output_dir)
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.steps = steps
        self.intrinsic_dims = intrinsic_dims
        self.reference_images = reference_images
        self.seed = seed

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        try:
            grids = self.sweeps(trainer.datamodule, pl_module)
        except Exception as error:  # noqa: BLE001 - pictures must never end a run
            log.warning("Latent sweep failed at epoch %d: %s", trainer.current_epoch, error)
            return
        for name, grid in grids.items():
            path = self.output_dir / f"epoch{trainer.current_epoch:03d}_{name}.png"
            save_png(grid, path)
            caption = f"{name} sweep, epoch {trainer.current_epoch}: original | recon | sweep"
            log_image(trainer.loggers, f"sweeps/{name}", grid, caption, trainer.global_step)

    @torch.no_grad()
    def sweeps(self, datamodule, pl_module: pl.LightningModule) -> dict:
        """Group name -> uint8 grid; rows: images; columns: original, reconstruction, sweep."""
        device = pl_module.device
        count = max(self.num_images, self.reference_images)
        images = torch.as_tensor(datamodule.sample_images("test", count, self.seed)["images"])
        images = images.to(device=device, dtype=torch.float32)
        reference, _ = pl_module.encode(images)
        shown, codes = images[: self.num_images], reference[: self.num_images]
        recon = pl_module.decode(codes)
        scale = max(1, 64 // images.shape[-1])
        grids = {}
        for name, dims in self._swept_dims(pl_module.layout, reference).items():
            paths = self._paths(reference, dims)  # [steps, len(dims)]
            rows = []
            for image, rec, code in zip(shown, recon, codes, strict=True):
                moved = code.expand(self.steps, -1).clone()
                moved[:, dims] = paths
                rows.append(torch.cat([image[None], rec[None], pl_module.decode(moved)]))
            grids[name] = image_grid(rows, scale=scale)
        return grids

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

    def _paths(self, reference: torch.Tensor, dims: list[int]) -> torch.Tensor:
        values = reference[:, dims]
        if len(dims) == 1:
            low, high = values.min(), values.max()
            margin = 0.1 * (high - low) + 1e-3
            return torch.linspace(low - margin, high + margin, self.steps, device=values.device)[
                :, None
            ]
        centre = values.mean(dim=0)
        radius = (values - centre).norm(dim=1).mean()
        angles = torch.linspace(0, 2 * math.pi, self.steps + 1, device=values.device)[:-1]
        return centre + radius * torch.stack([angles.cos(), angles.sin()], dim=1)
