"""Disentanglement scores of a representation against known ground-truth factors.

Five standard scores, with the definitions and default sample counts of disentanglement_lib
(Locatello et al. 2019) so that numbers can be compared with the literature:

* MIG (Chen et al. 2018): per factor, the gap between the two latents that carry the most
  information about it, relative to the factor's entropy.
* DCI (Eastwood & Williams 2018): from the feature importances of one gradient-boosted tree
  classifier per factor, how much each latent specialises in one factor (disentanglement), how
  much each factor is captured by one latent (completeness) and how predictable the factors are
  (informativeness, test accuracy).
* SAP (Kumar et al. 2018): per factor, the gap between the two best single-latent linear
  classifiers.
* beta-VAE score (Higgins et al. 2017) and FactorVAE score (Kim & Mnih 2018): accuracy of a
  classifier that tells which factor was held fixed in a batch from the codes alone.

The library samples from a generative simulator; here the data is a finite set of observations
with known factors. ``codes [N, D]`` are the encoder's posterior means and ``factors [N, K]`` the
integer value indices of every factor. Holding factor ``k`` fixed therefore means drawing rows
(with replacement) that share column ``k``'s value, and train/test data are a seeded split of
the rows. On a full factor grid this reproduces the simulator's distributions exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score
from sklearn.svm import LinearSVC

from dcign.errors import ConfigError

log = logging.getLogger(__name__)

Preset = Literal["default", "fast"]
Seed = int | np.random.Generator

# Below this many rows the 20% test split holds a handful of points and every accuracy is noise.
MIN_OBSERVATIONS = 50
TEST_FRACTION = 0.2
# Intervention scores gather codes of [points, batch, latents]; chunking bounds that memory.
_CHUNK_POINTS = 512


@dataclass(frozen=True)
class ScoreConfig:
    """Sample counts and model sizes of every score; the defaults are disentanglement_lib's."""

    num_bins: int = 20
    num_train: int = 10_000
    num_test: int = 5_000
    gbt_estimators: int = 100
    batch_size: int = 64
    intervention_train: int = 10_000
    intervention_eval: int = 5_000
    num_variance_estimate: int = 10_000
    collapse_std: float = 0.05


PRESETS: dict[str, ScoreConfig] = {
    "default": ScoreConfig(),
    # Small enough for tests and per-epoch validation on a CPU, large enough that a perfect code
    # still scores near 1 and a random one near chance.
    "fast": ScoreConfig(
        num_train=1_000,
        num_test=500,
        gbt_estimators=10,
        intervention_train=500,
        intervention_eval=250,
        num_variance_estimate=2_000,
    ),
}


def _check_inputs(codes: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate the pair and return float64 codes and int64 factors.

    Every score is silently wrong (or crashes deep inside scikit-learn) on transposed arrays,
    NaN codes or constant factors, so these are caught here with a message that says the fix.
    """
    codes = np.asarray(codes)
    factors = np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2:
        raise ConfigError(
            "codes must be [N, D] (observations x latents) and factors [N, K] (observations x "
            f"factors); got shapes {codes.shape} and {factors.shape}."
        )
    if codes.shape[0] != factors.shape[0]:
        raise ConfigError(
            f"codes and factors must describe the same observations, but codes has "
            f"{codes.shape[0]} rows and factors {factors.shape[0]}."
        )
    if codes.shape[0] < MIN_OBSERVATIONS:
        raise ConfigError(
            f"Disentanglement scores need at least {MIN_OBSERVATIONS} observations, got "
            f"{codes.shape[0]}; evaluate on more images."
        )
    if codes.shape[1] < 2:
        raise ConfigError(
            f"codes must have at least 2 latents (MIG and SAP compare the best two), got "
            f"{codes.shape[1]}."
        )
    if factors.shape[1] < 1:
        raise ConfigError("factors must have at least one column (one factor of variation).")
    if not np.issubdtype(codes.dtype, np.number) or not np.all(np.isfinite(codes)):
        raise ConfigError(
            "codes must be finite numbers; found NaN, inf or a non-numeric dtype. Check the "
            "encoder output (a diverged run produces NaN posterior means)."
        )
    if not np.issubdtype(factors.dtype, np.integer):
        raise ConfigError(
            f"factors must hold integer value indices, got dtype {factors.dtype}; pass the "
            "index of each factor value (e.g. factors.astype(np.int64) if they are whole)."
        )
    constant = [k for k in range(factors.shape[1]) if np.unique(factors[:, k]).size < 2]
    if constant:
        raise ConfigError(
            f"Factor column(s) {constant} take a single value in these observations; a factor "
            "needs at least 2 values to be scored. Drop those columns."
        )
    return codes.astype(np.float64), factors.astype(np.int64)


def _config(preset: str) -> ScoreConfig:
    """Look a preset up by name, with the valid names in the error."""
    if preset not in PRESETS:
        raise ConfigError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}.")
    return PRESETS[preset]


def _entropy(labels: np.ndarray) -> float:
    """Entropy in nats of a discrete variable's empirical distribution (MI's unit in sklearn)."""
    counts = np.unique(labels, return_counts=True)[1]
    p = counts / counts.sum()
    return float(-np.sum(p * np.log(p)))


def _discretize(codes: np.ndarray, num_bins: int) -> np.ndarray:
    """Bin each latent into ``num_bins`` equal-width bins over its own range.

    MIG is defined between discrete variables; equal-width histogram bins are the
    discretisation disentanglement_lib uses, so its numbers are reproduced.
    """
    binned = np.empty(codes.shape, dtype=np.int64)
    for j, column in enumerate(codes.T):
        inner_edges = np.histogram_bin_edges(column, bins=num_bins)[:-1]
        binned[:, j] = np.digitize(column, inner_edges)
    return binned


def mutual_information_matrix(
    codes: np.ndarray, factors: np.ndarray, num_bins: int = 20
) -> np.ndarray:
    """Mutual information (nats) between every discretised latent and every factor, [D, K]."""
    codes, factors = _check_inputs(codes, factors)
    binned = _discretize(codes, num_bins)
    return np.array(
        [[mutual_info_score(factor, latent) for factor in factors.T] for latent in binned.T]
    )


def mig_per_factor(codes: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Mutual information gap of each factor, [K]; uses all given rows.

    The gap is normalised by the factor's entropy so that factors with many values are not
    weighted more than binary ones.
    """
    mi = mutual_information_matrix(codes, factors, num_bins)
    top_two = -np.sort(-mi, axis=0)[:2]
    entropies = np.array([_entropy(factor) for factor in np.asarray(factors).T])
    return (top_two[0] - top_two[1]) / entropies


def mig(codes: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> float:
    """Mutual Information Gap: the mean over factors of :func:`mig_per_factor`."""
    return float(np.mean(mig_per_factor(codes, factors, num_bins)))


def _split(
    n: int, rng: np.random.Generator, num_train: int, num_test: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded disjoint train/test row indices: 20% for test, each part capped at its count."""
    order = rng.permutation(n)
    n_test = min(num_test, max(1, round(TEST_FRACTION * n)))
    n_train = min(num_train, n - n_test)
    return order[n_test : n_test + n_train], order[:n_test]


def _check_train_factors(train_factors: np.ndarray) -> None:
    """A classifier needs two classes; with few rows a split can leave a factor constant."""
    for k, column in enumerate(train_factors.T):
        if np.unique(column).size < 2:
            raise ConfigError(
                f"Factor column {k} takes a single value in the training split; pass more "
                "observations so every factor varies within the training rows."
            )


def _normalized_entropy(weights: np.ndarray, base: int) -> np.ndarray:
    """Entropy of each row of non-negative ``weights`` as a distribution, in log ``base``.

    The small offset makes an all-zero row uniform (maximal entropy) instead of NaN, as in
    disentanglement_lib; with a single outcome there is no uncertainty, so the entropy is 0.
    """
    if base < 2:
        return np.zeros(weights.shape[0])
    p = weights + 1e-11
    p = p / p.sum(axis=1, keepdims=True)
    return -np.sum(p * np.log(p), axis=1) / np.log(base)


def _weighted_specialisation(importance: np.ndarray) -> float:
    """Mean over rows of (1 - row entropy), weighted by each row's share of total importance.

    Rows are the items being scored (latents for disentanglement, factors for completeness);
    weighting keeps near-unused latents, whose importance row is noise, from dominating.
    """
    specialisation = 1.0 - _normalized_entropy(importance, base=importance.shape[1])
    total = importance.sum()
    if total > 0:
        shares = importance.sum(axis=1) / total
    else:
        shares = np.full(len(importance), 1.0 / len(importance))
    return float(np.sum(specialisation * shares))


def dci_importance(
    train_codes: np.ndarray,
    train_factors: np.ndarray,
    test_codes: np.ndarray,
    test_factors: np.ndarray,
    n_estimators: int = 100,
    random_state: int = 0,
) -> tuple[np.ndarray, float, float]:
    """Importance matrix [D, K] and mean train/test accuracy of one GBT classifier per factor."""
    importance = np.zeros((train_codes.shape[1], train_factors.shape[1]))
    train_accuracy, test_accuracy = [], []
    for k in range(train_factors.shape[1]):
        model = GradientBoostingClassifier(n_estimators=n_estimators, random_state=random_state)
        model.fit(train_codes, train_factors[:, k])
        importance[:, k] = np.abs(model.feature_importances_)
        train_accuracy.append(model.score(train_codes, train_factors[:, k]))
        test_accuracy.append(model.score(test_codes, test_factors[:, k]))
    return importance, float(np.mean(train_accuracy)), float(np.mean(test_accuracy))


def dci(
    codes: np.ndarray,
    factors: np.ndarray,
    seed: Seed = 0,
    num_train: int = 10_000,
    num_test: int = 5_000,
    n_estimators: int = 100,
) -> dict[str, float]:
    """Disentanglement, completeness and informativeness (test and train accuracy).

    ``n_estimators`` is the number of boosting stages; sklearn's default of 100 is what
    disentanglement_lib uses, fewer trade accuracy of the importances for speed. Completeness
    is weighted by each factor's share of importance as in the library; that is the plain mean
    over factors whenever every classifier made a split (its importances then sum to 1).
    """
    codes, factors = _check_inputs(codes, factors)
    rng = np.random.default_rng(seed)
    train, test = _split(len(codes), rng, num_train, num_test)
    _check_train_factors(factors[train])
    importance, train_accuracy, test_accuracy = dci_importance(
        codes[train],
        factors[train],
        codes[test],
        factors[test],
        n_estimators=n_estimators,
        random_state=int(rng.integers(2**31)),
    )
    return {
        "disentanglement": _weighted_specialisation(importance),
        "completeness": _weighted_specialisation(importance.T),
        "informativeness": test_accuracy,
        "informativeness_train": train_accuracy,
    }


def sap_matrix(
    train_codes: np.ndarray,
    train_factors: np.ndarray,
    test_codes: np.ndarray,
    test_factors: np.ndarray,
) -> np.ndarray:
    """Test accuracy [D, K] of a linear SVM predicting each factor from each single latent.

    ``C=0.01`` with balanced class weights is disentanglement_lib's choice for discrete factors;
    balancing keeps a classifier that always predicts the most common value from scoring well.
    """
    scores = np.zeros((train_codes.shape[1], train_factors.shape[1]))
    for i in range(train_codes.shape[1]):
        for k in range(train_factors.shape[1]):
            model = LinearSVC(C=0.01, class_weight="balanced")
            model.fit(train_codes[:, [i]], train_factors[:, k])
            scores[i, k] = model.score(test_codes[:, [i]], test_factors[:, k])
    return scores


def sap_per_factor(
    codes: np.ndarray,
    factors: np.ndarray,
    seed: Seed = 0,
    num_train: int = 10_000,
    num_test: int = 5_000,
) -> np.ndarray:
    """Gap between the two best single-latent accuracies of each factor, [K]."""
    codes, factors = _check_inputs(codes, factors)
    train, test = _split(len(codes), np.random.default_rng(seed), num_train, num_test)
    _check_train_factors(factors[train])
    scores = sap_matrix(codes[train], factors[train], codes[test], factors[test])
    top_two = -np.sort(-scores, axis=0)[:2]
    return top_two[0] - top_two[1]


def sap(
    codes: np.ndarray,
    factors: np.ndarray,
    seed: Seed = 0,
    num_train: int = 10_000,
    num_test: int = 5_000,
) -> float:
    """Separated Attribute Predictability: the mean over factors of :func:`sap_per_factor`."""
    return float(np.mean(sap_per_factor(codes, factors, seed, num_train, num_test)))


@dataclass(frozen=True)
class _ValueGroups:
    """The rows of one factor sorted by value, so drawing a row with a given value is a lookup.

    This is how "another observation with the same value of factor k" is sampled from a finite
    set: rows sharing a value are contiguous in ``sorted_rows``.
    """

    value_of_row: np.ndarray
    sorted_rows: np.ndarray
    starts: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, column: np.ndarray) -> _ValueGroups:
        """Group the rows of one factor column by value."""
        value_of_row = np.unique(column, return_inverse=True)[1].reshape(-1)
        counts = np.bincount(value_of_row)
        starts = np.cumsum(counts) - counts
        return cls(value_of_row, np.argsort(value_of_row, kind="stable"), starts, counts)

    def draw_matching(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """For each entry of ``rows``, a uniformly drawn row with the same value (any shape)."""
        values = self.value_of_row[rows]
        return self.sorted_rows[self.starts[values] + rng.integers(0, self.counts[values])]


def _fixed_factor_rows(
    groups: list[_ValueGroups], anchors: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Rows sharing factor ``labels[p]``'s value with ``anchors[p, ...]``, per point ``p``."""
    rows = np.empty_like(anchors)
    for k, group in enumerate(groups):
        chosen = labels == k
        rows[chosen] = group.draw_matching(anchors[chosen], rng)
    return rows


def _chunks(n: int) -> list[slice]:
    """Slices of ``_CHUNK_POINTS`` points, to bound the [points, batch, latents] gathers."""
    return [slice(start, start + _CHUNK_POINTS) for start in range(0, n, _CHUNK_POINTS)]


def _beta_vae_points(
    codes: np.ndarray,
    groups: list[_ValueGroups],
    num_points: int,
    batch_size: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Features (mean |z1 - z2| over a batch of pairs sharing factor k) and labels k."""
    labels = rng.integers(0, len(groups), size=num_points)
    firsts = rng.integers(0, len(codes), size=(num_points, batch_size))
    seconds = _fixed_factor_rows(groups, firsts, labels, rng)
    features = np.empty((num_points, codes.shape[1]))
    for part in _chunks(num_points):
        features[part] = np.abs(codes[firsts[part]] - codes[seconds[part]]).mean(axis=1)
    return features, labels


def beta_vae_score(
    codes: np.ndarray,
    factors: np.ndarray,
    seed: Seed = 0,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
) -> float:
    """Eval accuracy of a logistic regression telling the fixed factor from pair differences."""
    codes, factors = _check_inputs(codes, factors)
    rng = np.random.default_rng(seed)
    groups = [_ValueGroups.of(column) for column in factors.T]
    train_x, train_y = _beta_vae_points(codes, groups, num_train, batch_size, rng)
    model = LogisticRegression(random_state=int(rng.integers(2**31)))
    model.fit(train_x, train_y)
    log.debug("beta-VAE score train accuracy: %.3f", model.score(train_x, train_y))
    eval_x, eval_y = _beta_vae_points(codes, groups, num_eval, batch_size, rng)
    return float(model.score(eval_x, eval_y))


def _factor_vae_votes(
    scaled: np.ndarray,
    active: np.ndarray,
    groups: list[_ValueGroups],
    num_points: int,
    batch_size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Votes [K, D]: how often fixing factor k left latent d with the least scaled variance.

    ``scaled`` holds the codes divided by their global std; latents outside ``active`` never
    win the argmin.
    """
    labels = rng.integers(0, len(groups), size=num_points)
    anchors = np.repeat(rng.integers(0, len(scaled), size=(num_points, 1)), batch_size, axis=1)
    batches = _fixed_factor_rows(groups, anchors, labels, rng)
    winners = np.empty(num_points, dtype=np.int64)
    for part in _chunks(num_points):
        variances = np.var(scaled[batches[part]], axis=1, ddof=1)
        variances[:, ~active] = np.inf
        winners[part] = np.argmin(variances, axis=1)
    votes = np.zeros((len(groups), scaled.shape[1]), dtype=np.int64)
    np.add.at(votes, (labels, winners), 1)
    return votes


def factor_vae_score(
    codes: np.ndarray,
    factors: np.ndarray,
    seed: Seed = 0,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    num_variance_estimate: int = 10_000,
    collapse_std: float = 0.05,
) -> float:
    """Eval accuracy of a majority vote from least-variance latent to the fixed factor.

    Latents whose std over ``num_variance_estimate`` drawn rows is below ``collapse_std`` are
    ignored: a collapsed latent has near-zero variance whatever is fixed and would win every
    argmin. With no active latent the score is 0, as in disentanglement_lib.
    """
    codes, factors = _check_inputs(codes, factors)
    rng = np.random.default_rng(seed)
    sample = codes[rng.integers(0, len(codes), size=num_variance_estimate)]
    std = np.std(sample, axis=0, ddof=1)
    active = std >= collapse_std
    if not active.any():
        log.warning("FactorVAE score: every latent has std < %g; scoring 0.", collapse_std)
        return 0.0
    scaled = codes / np.where(active, std, 1.0)
    groups = [_ValueGroups.of(column) for column in factors.T]
    train_votes = _factor_vae_votes(scaled, active, groups, num_train, batch_size, rng)
    classifier = np.argmax(train_votes, axis=0)
    eval_votes = _factor_vae_votes(scaled, active, groups, num_eval, batch_size, rng)
    latents = np.arange(codes.shape[1])
    return float(eval_votes[classifier, latents].sum() / eval_votes.sum())


def _factor_names(factor_names: list[str] | tuple[str, ...] | None, num_factors: int) -> list[str]:
    """Validate names used for per-factor keys; none means no per-factor keys."""
    if factor_names is None:
        return []
    names = list(factor_names)
    if len(names) != num_factors or len(set(names)) != len(names):
        raise ConfigError(
            f"factor_names must be {num_factors} distinct names, one per factor column; got "
            f"{names}."
        )
    return names


def disentanglement_scores(
    codes: np.ndarray,
    factors: np.ndarray,
    seed: int = 0,
    preset: Preset = "default",
    factor_names: list[str] | tuple[str, ...] | None = None,
) -> dict[str, float]:
    """Every score as flat, logger-ready keys.

    Keys: ``mig``, ``dci/disentanglement``, ``dci/completeness``, ``dci/informativeness``,
    ``dci/informativeness_train``, ``sap``, ``beta_vae``, ``factor_vae``; with ``factor_names``
    also ``mig/<name>`` and ``sap/<name>`` per factor. Each score draws from its own child of
    ``seed``, so a score's value does not depend on which other scores ran before it.
    """
    config = _config(preset)
    codes, factors = _check_inputs(codes, factors)
    names = _factor_names(factor_names, factors.shape[1])
    dci_rng, sap_rng, beta_rng, factor_rng = (
        np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(4)
    )
    mig_gaps = mig_per_factor(codes, factors, config.num_bins)
    sap_gaps = sap_per_factor(codes, factors, sap_rng, config.num_train, config.num_test)
    dci_scores = dci(
        codes, factors, dci_rng, config.num_train, config.num_test, config.gbt_estimators
    )
    scores = {
        "mig": float(np.mean(mig_gaps)),
        **{f"dci/{key}": value for key, value in dci_scores.items()},
        "sap": float(np.mean(sap_gaps)),
        "beta_vae": beta_vae_score(
            codes,
            factors,
            beta_rng,
            config.batch_size,
            config.intervention_train,
            config.intervention_eval,
        ),
        "factor_vae": factor_vae_score(
            codes,
            factors,
            factor_rng,
            config.batch_size,
            config.intervention_train,
            config.intervention_eval,
            config.num_variance_estimate,
            config.collapse_std,
        ),
    }
    for k, name in enumerate(names):
        scores[f"mig/{name}"] = float(mig_gaps[k])
        scores[f"sap/{name}"] = float(sap_gaps[k])
    log.info("Disentanglement scores (%s preset): %s", preset, scores)
    return scores
