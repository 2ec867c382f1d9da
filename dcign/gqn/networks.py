"""The networks of a Generative Query Network (Eslami et al., Science 2018).

A GQN learns a scene representation ``r`` from a few context views (image + camera viewpoint)
and renders the scene from a new query viewpoint. The representation network encodes each view
and the views are summed, so the scene code does not depend on how many views there are nor on
their order. The generation network is a ConvDRAW: a recurrent latent-variable model that
refines a full-resolution canvas over L steps, with a prior that depends on what has been drawn
so far and, in training, a posterior that also sees the target image.

Everything is sized for 32x32 grayscale images on a CPU: the recurrent cores run on an
``image_size // 4`` grid and the canvas is upsampled to full resolution once per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from dcign.errors import ConfigError

# Space-to-depth factor from image to latent grid; the representation downsamples by the same.
GRID_FACTOR = 4
REPRESENTATIONS = ("tower", "pool")


@dataclass(frozen=True)
class GQNArchitecture:
    """Sizes of the representation and generation networks (``model.net.*``)."""

    image_size: int = 32
    channels: int = 1
    viewpoint_dim: int = 5
    representation: str = "tower"
    r_dim: int = 64
    h_dim: int = 48
    z_dim: int = 4
    steps: int = 6
    shared_core: bool = True
    kernel: int = 3
    stochastic: bool = True

    def __post_init__(self) -> None:
        if self.image_size < 2 * GRID_FACTOR or self.image_size % GRID_FACTOR != 0:
            raise ConfigError(
                f"model.net.image_size must be a multiple of {GRID_FACTOR} and at least "
                f"{2 * GRID_FACTOR}, because the latent grid is image_size // {GRID_FACTOR}; "
                f"got {self.image_size}."
            )
        for name in ("channels", "viewpoint_dim", "r_dim", "h_dim", "z_dim", "steps"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"model.net.{name} must be a positive int, got {value}.")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ConfigError(
                "model.net.kernel must be a positive odd number so that 'same' padding keeps "
                f"the grid size, got {self.kernel}."
            )
        if self.representation not in REPRESENTATIONS:
            raise ConfigError(
                f"model.net.representation must be one of {list(REPRESENTATIONS)}, "
                f"got {self.representation!r}."
            )

    @property
    def grid(self) -> int:
        """Side of the representation, latent and ConvLSTM grid."""
        return self.image_size // GRID_FACTOR


# The settings of ``model.net`` a GQN checkpoint's weights depend on (``viewpoint_dim`` is not
# set by the user: it follows from the data's factors).
WEIGHT_KEYS = {
    field.name: None for field in fields(GQNArchitecture) if field.name != "viewpoint_dim"
}


def _broadcast(viewpoints: torch.Tensor, size: int) -> torch.Tensor:
    """``[N, V]`` -> ``[N, V, size, size]``: lets convolutions see the camera at every position."""
    return viewpoints[:, :, None, None].expand(-1, -1, size, size)


class Representation(nn.Module):
    """One view ``(image [N, C, H, W], viewpoint [N, V])`` -> its code ``[N, r_dim, H/4, W/4]``.

    "tower" keeps a spatial code, which the paper found to learn faster; "pool" averages it to a
    single vector (more viewpoint-invariant) and broadcasts it back so both kinds have one shape
    and the generator does not need to know which one it gets.
    """

    def __init__(self, arch: GQNArchitecture) -> None:
        super().__init__()
        width = arch.r_dim
        # Two stride-2 convolutions reach the H/4 grid before the camera is mixed in.
        self.downsample = nn.Sequential(
            nn.Conv2d(arch.channels, width, 2, stride=2),
            nn.ReLU(),
            nn.Conv2d(width, width, 2, stride=2),
            nn.ReLU(),
        )
        self.merge = nn.Sequential(
            nn.Conv2d(width + arch.viewpoint_dim, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
        )
        self.out = nn.Conv2d(width, width, 1)
        self.pool = arch.representation == "pool"

    def forward(self, images: torch.Tensor, viewpoints: torch.Tensor) -> torch.Tensor:
        h = self.downsample(images)
        grid = h.shape[-1]
        # Residual around the merge so the image features pass through unchanged by default.
        h = torch.relu(h + self.merge(torch.cat([h, _broadcast(viewpoints, grid)], dim=1)))
        r = torch.relu(self.out(h))
        if self.pool:
            r = r.mean(dim=(2, 3), keepdim=True).expand(-1, -1, grid, grid)
        return r


def scene_representation(
    rep: Representation, images: torch.Tensor, viewpoints: torch.Tensor
) -> torch.Tensor:
    """Context ``images [B, M, C, H, W]``, ``viewpoints [B, M, V]`` -> ``r [B, r_dim, H/4, W/4]``.

    The sum over the M views makes the scene code independent of the order of the views and lets
    it absorb any number of them.
    """
    b, m = images.shape[:2]
    r = rep(images.flatten(0, 1), viewpoints.flatten(0, 1))
    return r.view(b, m, *r.shape[1:]).sum(dim=1)


class ConvLSTMCell(nn.Module):
    """An LSTM whose gates are convolutions, so the state keeps its spatial layout.

    One convolution over ``concat(x, h)`` gives the gate pre-activations, channels ordered
    ``i, f, o, g``; then ``c' = f * c + i * g`` and ``h' = o * tanh(c')``.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel: int) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.gates = nn.Conv2d(
            in_channels + hidden_channels, 4 * hidden_channels, kernel, padding=kernel // 2
        )

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_channels, *x.shape[2:])
            state = (zeros, zeros)
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or as it is when already wider (float64 in tests)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def gaussian_kl(
    mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    """Elementwise KL(N(mu_q, var_q) || N(mu_p, var_p)) in closed form.

    Closed form rather than a sampled estimate: both the prior and the posterior of ConvDRAW are
    diagonal Gaussians, and the exact KL has a much lower-variance gradient. It is computed in
    float32 whatever the convolutions ran in: in bfloat16 the difference of nearly equal terms
    loses the KL (it came out negative under bf16 autocast).
    """
    mu_q, logvar_q, mu_p, logvar_p = map(_at_least_float32, (mu_q, logvar_q, mu_p, logvar_p))
    return 0.5 * (
        logvar_p
        - logvar_q
        + (torch.exp(logvar_q) + (mu_q - mu_p) ** 2) * torch.exp(-logvar_p)
        - 1.0
    )


def _reparameterise(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``z = mu + sigma * eps``: a sample that stays differentiable in mu and logvar."""
    return mu + torch.exp(0.5 * logvar) * eps


class Generator(nn.Module):
    """ConvDRAW: ``(r, query viewpoint[, target])`` -> mean image ``[N, C, H, W]``.

    Each of the L steps draws a latent ``z`` on the ``H/4`` grid, updates the generator core and
    adds an upsampled copy of its hidden state to a full-resolution canvas; the image is a 1x1
    convolution of the final canvas. Separate cores per step (``shared_core=False``) give each
    step its own role at the cost of L times the core parameters.
    """

    def __init__(self, arch: GQNArchitecture) -> None:
        super().__init__()
        self.arch = arch
        cores = 1 if arch.shared_core else arch.steps
        latent = arch.z_dim if arch.stochastic else 0
        condition = arch.viewpoint_dim + arch.r_dim
        self.generation_cores = nn.ModuleList(
            ConvLSTMCell(latent + condition, arch.h_dim, arch.kernel) for _ in range(cores)
        )
        if arch.stochastic:
            target = arch.channels * GRID_FACTOR**2
            self.inference_cores = nn.ModuleList(
                ConvLSTMCell(target + condition + arch.h_dim, arch.h_dim, arch.kernel)
                for _ in range(cores)
            )
            self.prior = nn.Conv2d(arch.h_dim, 2 * arch.z_dim, 5, padding=2)
            self.posterior = nn.Conv2d(arch.h_dim, 2 * arch.z_dim, 5, padding=2)
        self.upsample = nn.ConvTranspose2d(arch.h_dim, arch.h_dim, GRID_FACTOR, stride=GRID_FACTOR)
        self.render = nn.Conv2d(arch.h_dim, arch.channels, 1)

    def forward(
        self,
        r: torch.Tensor,
        query_viewpoints: torch.Tensor,
        target: torch.Tensor,
        noise: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: z from the posterior given ``target``; returns ``(mean, kl [N])``.

        ``noise`` (one standard-normal ``[N, z_dim, H/4, W/4]`` tensor per step) fixes the
        samples, for reproducible evaluation and tests.
        """
        if noise is not None and len(noise) != self.arch.steps:
            raise ValueError(
                f"noise needs one tensor per step ({self.arch.steps}), got {len(noise)}."
            )
        condition = torch.cat([_broadcast(query_viewpoints, r.shape[-1]), r], dim=1)
        canvas, state = self._canvas(r), self._zero_state(r)
        kl = r.new_zeros(r.shape[0])
        if not self.arch.stochastic:
            return self._unroll_deterministic(condition, state, canvas), kl
        x = F.pixel_unshuffle(target, GRID_FACTOR)
        inference: tuple[torch.Tensor, torch.Tensor] | None = None
        for step in range(self.arch.steps):
            h_g = state[0]
            mu_p, logvar_p = self.prior(h_g).chunk(2, dim=1)
            inference = self._core(self.inference_cores, step)(
                torch.cat([x, condition, h_g], dim=1), inference
            )
            mu_q, logvar_q = self.posterior(inference[0]).chunk(2, dim=1)
            eps = noise[step] if noise is not None else torch.randn_like(mu_q)
            z = _reparameterise(mu_q, logvar_q, eps)
            kl = kl + gaussian_kl(mu_q, logvar_q, mu_p, logvar_p).sum(dim=(1, 2, 3))
            state, canvas = self._draw(step, torch.cat([z, condition], dim=1), state, canvas)
        return self._image(canvas), kl

    def sample(
        self,
        r: torch.Tensor,
        query_viewpoints: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Render a new view with z from the prior; ``generator`` makes the draw reproducible."""
        condition = torch.cat([_broadcast(query_viewpoints, r.shape[-1]), r], dim=1)
        canvas, state = self._canvas(r), self._zero_state(r)
        if not self.arch.stochastic:
            return self._unroll_deterministic(condition, state, canvas)
        for step in range(self.arch.steps):
            mu_p, logvar_p = self.prior(state[0]).chunk(2, dim=1)
            eps = torch.randn(mu_p.shape, generator=generator, device=mu_p.device, dtype=mu_p.dtype)
            z = _reparameterise(mu_p, logvar_p, eps)
            state, canvas = self._draw(step, torch.cat([z, condition], dim=1), state, canvas)
        return self._image(canvas)

    def _canvas(self, r: torch.Tensor) -> torch.Tensor:
        """An empty full-resolution canvas; the steps add to it, the image is read from it."""
        size = self.arch.image_size
        return r.new_zeros(r.shape[0], self.arch.h_dim, size, size)

    def _zero_state(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Explicit zeros rather than None: the prior of the first step reads ``h_g``."""
        zeros = r.new_zeros(r.shape[0], self.arch.h_dim, r.shape[-2], r.shape[-1])
        return zeros, zeros

    def _core(self, cores: nn.ModuleList, step: int) -> ConvLSTMCell:
        return cores[0] if self.arch.shared_core else cores[step]

    def _draw(
        self,
        step: int,
        inputs: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor],
        canvas: torch.Tensor,
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """One generator-core update, whose hidden state is added to the canvas."""
        state = self._core(self.generation_cores, step)(inputs, state)
        return state, canvas + self.upsample(state[0])

    def _unroll_deterministic(
        self,
        condition: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor],
        canvas: torch.Tensor,
    ) -> torch.Tensor:
        """The latent-free variant: the same L refinements, driven by viewpoint and r alone."""
        for step in range(self.arch.steps):
            state, canvas = self._draw(step, condition, state, canvas)
        return self._image(canvas)

    def _image(self, canvas: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.render(canvas))


def sigma_schedule(step: int, start: float = 2.0, end: float = 0.7, steps: int = 200_000) -> float:
    """Pixel standard deviation at a training step, annealed linearly from ``start`` to ``end``.

    A large sigma early on lets the KL term shape the latents before the likelihood demands
    sharp images; the paper anneals 2.0 -> 0.7 over 200k steps and then keeps 0.7.
    """
    if steps < 1:
        raise ConfigError(f"the pixel-sigma annealing needs at least 1 step, got {steps}.")
    progress = min(max(step / steps, 0.0), 1.0)
    return start + (end - start) * progress


def gaussian_nll(mean: torch.Tensor, target: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-image ``-log N(target; mean, sigma^2)`` summed over pixels, shape ``[N]``.

    The constant is kept so the value is a true negative log-likelihood (a bound in nats that can
    be compared across sigmas), not just a scaled squared error. Computed in float32, as a sum
    over every pixel must be (a bfloat16 mean under autocast is upcast here).
    """
    squared = ((_at_least_float32(target) - _at_least_float32(mean)) / sigma) ** 2
    per_pixel = 0.5 * squared + math.log(sigma) + 0.5 * math.log(2 * math.pi)
    return per_pixel.flatten(1).sum(dim=1)
