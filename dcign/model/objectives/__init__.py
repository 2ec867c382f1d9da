"""The training objectives, one class each, chosen with ``model/objective=<name>``.

:mod:`~dcign.model.objectives.base` holds what they share (the ELBO's options, plain SGVB for
the baseline); :mod:`~dcign.model.objectives.dcign` DC-IGN's clamping and invariance targeting;
:mod:`~dcign.model.objectives.group` the group posteriors of ML-VAE, GVAE and Ada-GVAE. Each
class's config node is ``conf/model/objective/<name>.yaml`` (docs/training.md, "Adding an
objective").
"""
