"""Dataset inference for encoders (Dziedzic et al., NeurIPS 2022) with a Gaussian mixture fit by EM in torch.

An encoder trained on (or stolen from one trained on) the owner's private data represents those
images "more typically" than unseen images of the same distribution. The test:

1. represent part of the private training set (``fit``) with the encoder under test (``space=
   "suspect"``, the default, works for any output dimension) or with the victim (``space="victim"``,
   the suspect must answer in the victim's space), standardise with the fit split's statistics and
   fit a :class:`GaussianMixture` to it;
2. score the suspect's representations of *held-out* private training images and of *unseen* images
   of the same distribution under that mixture (per-sample log-likelihood);
3. one-sided Welch t-test (``scipy.stats.ttest_ind(..., equal_var=False, alternative="greater")``):
   is the log-likelihood higher on the private held-out images? Verdict ``stolen`` when
   ``p < alpha`` (0.01), else ``independent``.

:func:`alignment_inference` is the same test on another per-image score, the agreement of the
suspect's representations of augmented views (:func:`view_alignment`), for encoders whose
representation density barely separates members from non-members.

An encoder trained by someone else on the *same* private images would also be flagged: the test
detects use of the data, which is what it is for.

:class:`GaussianMixture` is EM with diagonal or full covariances, ``reg`` added to every variance
(as sklearn's ``reg_covar``), k-means++ seeding and a few Lloyd steps for the start, float64 on
the CPU and float32 on CUDA (``device=None`` picks CUDA when present).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import ttest_ind
from torch import nn

from sslsteal_fast.data import SimCLRAugment, to_float
from sslsteal_fast.ownership.verdict import Verdict, check_alpha, decide
from sslsteal_fast.probes import extract_features
from sslsteal_fast.util.checks import check_choice, check_int, check_number, check_positive_int
from sslsteal_fast.victim import Victim

__all__ = [
    "COVARIANCES",
    "DatasetInferenceResult",
    "GaussianMixture",
    "alignment_inference",
    "dataset_inference",
    "view_alignment",
    "welch_verdict",
]

COVARIANCES = ("diag", "full")
_LOG_2PI = math.log(2.0 * math.pi)


class GaussianMixture:
    """A K-component Gaussian mixture fit by expectation-maximisation.

    Args:
        n_components: K.
        covariance: ``"diag"`` or ``"full"``.
        reg: added to the variances (diagonal) at every M-step, for stability.
        max_iter, tol: EM stops after ``max_iter`` iterations or when the mean log-likelihood gains < ``tol``.
        n_init: k-means++ seedings tried for the start (the one with the least inertia is used).
        seed: seeds the initialisation.
        device: None = CUDA when available, else CPU.

    After :meth:`fit`: ``weights`` (K,), ``means`` (K, D), ``covariances`` ((K, D) or (K, D, D)),
    ``history`` (mean log-likelihood after each iteration, non-decreasing up to rounding),
    ``converged``, ``n_iter``.
    """

    def __init__(
        self,
        n_components: int = 8,
        covariance: str = "diag",
        *,
        reg: float = 1e-4,
        max_iter: int = 200,
        tol: float = 1e-5,
        n_init: int = 5,
        seed: int = 0,
        device: str | torch.device | None = None,
    ) -> None:
        self.n_components = check_positive_int("GaussianMixture: n_components", n_components)
        self.covariance = check_choice("GaussianMixture: covariance", covariance, COVARIANCES)
        self.reg = check_number("GaussianMixture: reg", reg, low=0.0, strict=True)
        self.max_iter = check_positive_int("GaussianMixture: max_iter", max_iter)
        self.tol = check_number("GaussianMixture: tol", tol, low=0.0)
        self.n_init = check_positive_int("GaussianMixture: n_init", n_init)
        self.seed = check_int("GaussianMixture: seed", seed, low=0)
        self.device = (
            torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        )
        self.dtype = torch.float32 if self.device.type == "cuda" else torch.float64
        self.history: list[float] = []
        self.converged = False
        self.n_iter = 0

    # --------------------------------------------------------------------------------- fitting
    def _init_means(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Best (least inertia) of ``n_init`` k-means++ seedings, each refined by Lloyd steps."""
        best, best_inertia = None, math.inf
        for _ in range(self.n_init):
            means = self._kmeans(x, g)
            inertia = float(torch.cdist(x, means).min(1).values.pow(2).sum())
            if inertia < best_inertia:
                best, best_inertia = means, inertia
        assert best is not None
        return best

    def _kmeans(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        idx = [int(torch.randint(0, n, (1,), generator=g))]
        d2 = ((x - x[idx[0]]) ** 2).sum(1)
        for _ in range(1, self.n_components):
            probs = (d2 / d2.sum()).cpu() if float(d2.sum()) > 0 else torch.full((n,), 1.0 / n)
            nxt = int(torch.multinomial(probs.float(), 1, generator=g))
            idx.append(nxt)
            d2 = torch.minimum(d2, ((x - x[nxt]) ** 2).sum(1))
        means = x[idx].clone()
        for _ in range(10):  # Lloyd steps
            assign = torch.cdist(x, means).argmin(1)
            for k in range(self.n_components):
                members = x[assign == k]
                if members.shape[0] > 0:
                    means[k] = members.mean(0)
        return means

    def _log_gauss(self, x: torch.Tensor) -> torch.Tensor:
        """(N, K) log N(x_n | mu_k, Sigma_k)."""
        d = x.shape[1]
        if self.covariance == "diag":
            var = self.covariances
            diff2 = (x[:, None, :] - self.means[None]) ** 2
            return -0.5 * (d * _LOG_2PI + torch.log(var).sum(1)[None] + (diff2 / var[None]).sum(2))
        chol = torch.linalg.cholesky(self.covariances)  # (K, D, D)
        out = torch.empty(x.shape[0], self.n_components, dtype=x.dtype, device=x.device)
        for k in range(self.n_components):
            diff = (x - self.means[k]).T  # (D, N)
            sol = torch.linalg.solve_triangular(chol[k], diff, upper=False)
            logdet = 2.0 * torch.log(torch.diagonal(chol[k])).sum()
            out[:, k] = -0.5 * (d * _LOG_2PI + logdet + (sol**2).sum(0))
        return out

    def _joint(self, x: torch.Tensor) -> torch.Tensor:
        return self._log_gauss(x) + torch.log(self.weights)[None]

    def _m_step(self, x: torch.Tensor, resp: torch.Tensor) -> None:
        nk = resp.sum(0) + 10 * torch.finfo(x.dtype).eps
        self.weights = nk / nk.sum()
        self.means = (resp.T @ x) / nk[:, None]
        if self.covariance == "diag":
            ex2 = (resp.T @ (x * x)) / nk[:, None]
            self.covariances = (ex2 - self.means**2).clamp_min(0) + self.reg
        else:
            d = x.shape[1]
            covs = torch.empty(self.n_components, d, d, dtype=x.dtype, device=x.device)
            eye = torch.eye(d, dtype=x.dtype, device=x.device)
            for k in range(self.n_components):
                diff = x - self.means[k]
                covs[k] = (resp[:, k, None] * diff).T @ diff / nk[k] + self.reg * eye
            self.covariances = covs

    def fit(self, x: torch.Tensor) -> GaussianMixture:
        """Fit to float (N, D) data (N >= n_components); returns self."""
        x = self._as_input(x)
        if x.shape[0] < self.n_components:
            raise ValueError(
                f"GaussianMixture: need at least n_components = {self.n_components} rows, got {x.shape[0]}"
            )
        g = torch.Generator().manual_seed(self.seed)
        means = self._init_means(x, g)
        resp = torch.nn.functional.one_hot(torch.cdist(x, means).argmin(1), self.n_components).to(x.dtype)
        self._m_step(x, resp)
        self.history, self.converged = [], False
        for it in range(self.max_iter):
            joint = self._joint(x)
            norm = torch.logsumexp(joint, dim=1)
            self.history.append(float(norm.mean()))
            self._m_step(x, torch.exp(joint - norm[:, None]))
            self.n_iter = it + 1
            if it > 0 and abs(self.history[-1] - self.history[-2]) < self.tol:
                self.converged = True
                break
        return self

    def _as_input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] == 0:
            raise ValueError(
                f"GaussianMixture: expected a non-empty (N, D) tensor, got {tuple(getattr(x, 'shape', ()))}"
            )
        if not bool(torch.isfinite(x).all()):
            raise ValueError("GaussianMixture: the data contain NaN or infinite values")
        return x.detach().to(self.device, self.dtype)

    def score_samples(self, x: torch.Tensor) -> torch.Tensor:
        """Per-row log-likelihood (N,) float64 on the CPU."""
        if not hasattr(self, "means"):
            raise ValueError("GaussianMixture: call fit() first")
        return torch.logsumexp(self._joint(self._as_input(x)), dim=1).to("cpu", torch.float64)

    def score(self, x: torch.Tensor) -> float:
        """Mean log-likelihood per row (sklearn's ``score``)."""
        return float(self.score_samples(x).mean())


@dataclass(kw_only=True)
class DatasetInferenceResult(Verdict):
    """Outcome of :func:`dataset_inference`: the Welch t ``statistic`` and the mean log-likelihoods under
    the mixture of ``n_private`` held-out private and ``n_unseen`` unseen images."""

    statistic: float
    ll_private: float
    ll_unseen: float
    n_private: int
    n_unseen: int


def welch_verdict(private: torch.Tensor, unseen: torch.Tensor, alpha: float = 0.01) -> tuple[float, float, str]:
    """One-sided Welch t-test that ``private`` scores exceed ``unseen`` ones -> ``(t, p, verdict)``."""
    check_alpha("welch_verdict: alpha", alpha)
    a, b = private.double().cpu().numpy(), unseen.double().cpu().numpy()
    if a.size < 2 or b.size < 2:
        raise ValueError("welch_verdict: need at least 2 scores on each side")
    bad = {name: int((~np.isfinite(v)).sum()) for name, v in (("private", a), ("unseen", b))}
    if any(bad.values()):
        # A NaN score would make the t-test's p NaN, read as "no evidence": a silent "independent".
        raise ValueError(
            f"welch_verdict: {bad['private']} private and {bad['unseen']} unseen scores are not finite; the suspect's "
            "representations (or the images) contain NaN or inf"
        )
    res = ttest_ind(a, b, equal_var=False, alternative="greater")
    t, p = float(res.statistic), float(res.pvalue)
    if math.isnan(p):  # both samples constant: no evidence either way
        p = 1.0
    return t, p, decide(p, alpha)


def _whitening(fit: torch.Tensor, pca_dim: int | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A map x -> whitened coordinates estimated on ``fit`` (PCA to ``pca_dim`` or per-feature standardising)."""
    mu = fit.mean(0)
    if pca_dim is None:
        sd = fit.std(0)
        sd = sd.clamp_min(1e-6 * float(sd.max().clamp_min(1e-12)))
        return lambda x: (x.double() - mu) / sd
    check_positive_int("dataset_inference: pca_dim", pca_dim)
    _, s, vh = torch.linalg.svd(fit - mu, full_matrices=False)
    k = min(pca_dim, int((s > s[0] * 1e-6).sum()))
    scale = s[:k] / math.sqrt(max(fit.shape[0] - 1, 1))
    basis = vh[:k].T
    return lambda x: ((x.double() - mu) @ basis) / scale


def dataset_inference(
    suspect: nn.Module | Victim,
    private_fit: torch.Tensor,
    private_heldout: torch.Tensor,
    unseen: torch.Tensor,
    *,
    victim: nn.Module | Victim | None = None,
    n_components: int = 8,
    covariance: str = "diag",
    reg: float = 1e-3,
    pca_dim: int | None = 32,
    alpha: float = 0.01,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> DatasetInferenceResult:
    """Does ``suspect`` know the private training set? (see the module docstring).

    Args:
        suspect: encoder module or victim API (``.query``; billed).
        private_fit: images (N, C, H, W) of the private training set to fit the mixture on.
        private_heldout: other private training images, scored.
        unseen: images of the same distribution that no one trained on, scored.
        victim: when given, the mixture is fit on the *victim's* representations of ``private_fit``
            (the suspect must answer in the victim's dimension); else on the suspect's.
        pca_dim: project onto the fit split's top principal components (whitened) first; None keeps
            every dimension (standardised). Dead or near-constant features otherwise make the
            likelihood of unseen points explode.
    """
    check_alpha("dataset_inference: alpha", alpha)
    fit_source = suspect if victim is None else victim
    fit = extract_features(fit_source, private_fit)
    priv = extract_features(suspect, private_heldout)
    new = extract_features(suspect, unseen)
    if priv.shape[1] != fit.shape[1]:
        raise ValueError(
            f"dataset_inference: the suspect answers {priv.shape[1]}-d but the mixture is "
            f"{fit.shape[1]}-d; compare in the same space"
        )
    project = _whitening(fit.double(), pca_dim)
    gmm = GaussianMixture(n_components, covariance, reg=reg, seed=seed, device=device).fit(project(fit))
    ll_priv = gmm.score_samples(project(priv))
    ll_new = gmm.score_samples(project(new))
    return _decide(ll_priv, ll_new, alpha)


def _decide(private: torch.Tensor, unseen: torch.Tensor, alpha: float) -> DatasetInferenceResult:
    """The one-sided Welch verdict on per-image scores of private and unseen images, with their means."""
    t, p, verdict = welch_verdict(private, unseen, alpha)
    return DatasetInferenceResult(
        statistic=t,
        p_value=p,
        verdict=verdict,
        alpha=float(alpha),
        ll_private=float(private.mean()),
        ll_unseen=float(unseen.mean()),
        n_private=int(private.shape[0]),
        n_unseen=int(unseen.shape[0]),
    )


def view_alignment(
    encoder: nn.Module | Victim,
    images: torch.Tensor,
    augment: SimCLRAugment,
    *,
    views: int = 8,
    seed: int = 0,
    batch_size: int = 256,
) -> torch.Tensor:
    """Per image, how consistently ``encoder`` represents ``views`` augmented views of it -> float64 (N,).

    The score is the mean cosine similarity between each view's representation and the mean of the
    views' unit representations. A contrastive encoder was trained to pull exactly its training
    images' views together, so it scores them higher than images it never saw (the membership
    signal of EncoderMI, Liu et al., CCS 2021); a copy that imitates it closely inherits the gap.
    The views are drawn from a generator seeded with ``seed``, so every suspect sees the same views.
    A victim API is queried (and billed) once per view.
    """
    check_positive_int("view_alignment: views", views)
    if views < 2:
        raise ValueError("view_alignment: views must be at least 2 (one view has nothing to agree with)")
    x = to_float(images)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        stacks = [augment(x) for _ in range(views)]
    reps = torch.stack([F.normalize(extract_features(encoder, v, batch_size).double(), dim=1) for v in stacks])
    centre = F.normalize(reps.mean(0), dim=1)
    return (reps * centre).sum(-1).mean(0)


def alignment_inference(
    suspect: nn.Module | Victim,
    private: torch.Tensor,
    unseen: torch.Tensor,
    augment: SimCLRAugment,
    *,
    views: int = 8,
    alpha: float = 0.01,
    seed: int = 0,
) -> DatasetInferenceResult:
    """Dataset inference by view alignment: are the suspect's views of the private images more aligned?

    The same decision as :func:`dataset_inference` (one-sided Welch t-test, ``stolen`` when
    ``p < alpha``) on the per-image :func:`view_alignment` scores of ``private`` training images
    against ``unseen`` images of the same distribution, under ``augment`` (the victim's training
    views, which the owner knows). ``ll_private`` / ``ll_unseen`` hold the mean alignments. It needs
    no density model and works in any representation space.
    """
    check_alpha("alignment_inference: alpha", alpha)
    priv = view_alignment(suspect, private, augment, views=views, seed=seed)
    new = view_alignment(suspect, unseen, augment, views=views, seed=seed + 1)
    return _decide(priv, new, alpha)
