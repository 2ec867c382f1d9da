"""Explore a checkpoint in a web page: ``python -m dcign.explorer [ckpt_path=...] [port=7860]``.

Opens the checkpoint shipped with the package when none is given, rebuilds its data set from the
run config stored in it (as ``dcign.evaluate`` does) and serves the page of
:mod:`dcign.explorer.server` on ``http://127.0.0.1:<port>/`` until interrupted.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from dcign.explorer.server import ExplorerServer
from dcign.explorer.session import ExplorerSession
from dcign.run.training import run_or_explain
from dcign.ship import SHIPPED

log = logging.getLogger(__name__)
CONF = str(Path(__file__).resolve().parents[2] / "conf")


def serve(cfg: DictConfig) -> None:
    """Build the session, then serve the page until Ctrl-C."""
    session = ExplorerSession.from_checkpoint(
        str(cfg.ckpt_path or SHIPPED),
        cache_dir=cfg.paths.cache_dir,
        gallery_size=int(cfg.gallery),
        reference_images=int(cfg.reference_images),
        intrinsic_directions=int(cfg.intrinsic_directions),
    )
    server = ExplorerServer(session, str(cfg.host), int(cfg.port))
    log.info("The explorer is at %s (Ctrl-C stops it)", server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("Stopped")
    finally:
        server.server_close()


@hydra.main(version_base="1.3", config_path=CONF, config_name="explore")
def main(cfg: DictConfig) -> None:
    run_or_explain(serve, cfg)


if __name__ == "__main__":
    main()
