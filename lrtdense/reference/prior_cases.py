"""The reference cases of the ``priors`` and ``dense_variational`` kinds (SPEC.md section 3,
"Priors and divergences", "DenseVariational"): one TFP layer with a prior or divergence beyond the
fixed Normal prior's closed-form KL, and TFP's DenseVariational. Part of
``lrtdense.reference.cases.CASES``; the schema is that module's.
"""
from lrtdense.dense_variational import DenseVariational
from lrtdense.distributions import (ClosedFormKL, LaplacePrior, MonteCarloKL, NormalPrior,
                                    ScaleMixturePrior, StudentTPrior, TrainableNormalPrior)
from lrtdense.network import Sequential
from lrtdense.reference.case_types import ESTIMATORS, Case, tfp_layer

__all__ = ["prior_cases", "dense_variational_cases", "MIXTURE", "NARROW_MIXTURE",
           "NARROW_MIXTURE_64", "LAPLACE", "STUDENT_T", "NUM_EXAMPLES", "SCALED", "MC", "MC_N",
           "KL_N", "NOT_RECORDED"]

# The priors of the ``priors`` cases. The mixture is Blundell et al.'s form with both components
# in play at the cases' weights (|w| ~ 0.05 to 1); NARROW_MIXTURE puts most |w| beyond 14.6 sigma1
# (0.29), where both float32 component densities underflow and only a logsumexp gives a finite
# log p.
MIXTURE = ScaleMixturePrior(0.25, 1.5, 0.1)
NARROW_MIXTURE = ScaleMixturePrior(0.75, 0.02, 0.002)
# float64 densities underflow at |w| > 38.6 sigma: NARROW_MIXTURE_64's at |w| > 0.39
NARROW_MIXTURE_64 = ScaleMixturePrior(0.75, 0.01, 0.001)
LAPLACE = LaplacePrior(0.1, 0.5)
STUDENT_T = StudentTPrior(3.0, -0.2, 0.5)
NUM_EXAMPLES = 50                           # the N of the weight-1/N idiom
SCALED = 1.0 / NUM_EXAMPLES
MC = MonteCarloKL()
MC_N = MonteCarloKL(SCALED)
KL_N = ClosedFormKL(SCALED)


def prior_cases():
    """One TFP layer each: every non-Gaussian prior with the Monte Carlo divergence on the
    estimators where it means something, the extra draw, the closed-form KL scaled by 1/N, trainable
    priors (closed form and Monte Carlo, kernel and bias), a Deterministic bias under non-Normal
    priors.

    Long because it is a table of cases, one ``add`` per case.
    """
    out = []

    def add(name, description, est, dtype="float64", input_shape=(5, 4), pinned=(), **kwargs):
        out.append(Case(f"priors_{est}_{dtype[-2:]}_{name}", f"{est}: {description}", "priors",
                        dtype, tfp_layer(est, dtype=dtype, **kwargs), input_shape,
                        pinned=pinned))

    normal_bias = {"bias_posterior": "normal"}
    for dtype in ("float64", "float32"):
        add("mixture_mc", "scale-mixture prior 0.25 N(0, 1.5^2) + 0.75 N(0, 0.1^2), Monte Carlo "
            "KL at the forward's own kernel W, relu", "reparam", dtype, activation="relu",
            kernel_prior=MIXTURE, kernel_divergence=MC)
        add("mixture_mc", "scale-mixture prior, Monte Carlo KL at an extra draw (noise "
            "kernel_divergence), relu", "lrt", dtype, activation="relu", kernel_prior=MIXTURE,
            kernel_divergence=MC)
        add("mixture_mc", "scale-mixture prior, Monte Carlo KL at an extra draw (noise "
            "kernel_divergence), linear", "flipout", dtype, activation=None,
            kernel_prior=MIXTURE, kernel_divergence=MC)
        add("laplace_mc", "Laplace(0.1, 0.5) prior, Monte Carlo KL at the forward's W, tanh",
            "reparam", dtype, activation="tanh", kernel_prior=LAPLACE, kernel_divergence=MC)
        add("kl_scaled_normal_bias", "closed-form KL times 1/50 on kernel and Normal bias, "
            "priors N(0, 1), tanh", "lrt", dtype, activation="tanh", **normal_bias,
            bias_prior=NormalPrior(0.0, 1.0), kernel_divergence=KL_N, bias_divergence=KL_N)
    add("mixture_narrow", "float32 scale mixture 0.75 N(0, 0.02^2) + 0.25 N(0, 0.002^2): at |w| "
        "> 0.29 both component densities underflow; only logsumexp stays finite", "reparam",
        "float32", activation=None, kernel_prior=NARROW_MIXTURE, kernel_divergence=MC)
    add("mixture_mc_extra", "MonteCarloKL(sample='extra') on the kernel and a Normal bias, both "
        "under the scale mixture: the noise's kernel_divergence and bias_divergence, not the "
        "forward's draws", "reparam", activation="sigmoid", **normal_bias, kernel_prior=MIXTURE,
        bias_prior=MIXTURE, kernel_divergence=MonteCarloKL(sample="extra"),
        bias_divergence=MonteCarloKL(sample="extra"))
    add("laplace_mc_normal_bias", "Laplace prior on kernel (extra draw) and Normal bias (the "
        "forward's bias draw), Monte Carlo KL times 1/50, linear", "lrt", activation=None,
        **normal_bias, kernel_prior=LAPLACE, bias_prior=LAPLACE, kernel_divergence=MC_N,
        bias_divergence=MC_N)
    add("student_t_mc", "Student-t(3, -0.2, 0.5) prior, Monte Carlo KL at the forward's W",
        "reparam", activation=None, kernel_prior=STUDENT_T, kernel_divergence=MC)
    add("student_t_mc", "Student-t prior, Monte Carlo KL at an extra draw, sigmoid", "flipout",
        activation="sigmoid", kernel_prior=STUDENT_T, kernel_divergence=MC)
    for est in ("reparam", "flipout"):
        add("kl_scaled_normal_bias", "closed-form KL times 1/50 on kernel and Normal bias, priors "
            "N(0, 1), tanh", est, activation="tanh", **normal_bias,
            bias_prior=NormalPrior(0.0, 1.0), kernel_divergence=KL_N, bias_divergence=KL_N)
    trainable = TrainableNormalPrior()
    add("trainable_kl_scaled", "trainable Normal priors on kernel and Normal bias (params "
        "*_prior_loc, *_prior_untransformed_scale), closed-form KL times 1/50, relu", "lrt",
        activation="relu", **normal_bias, kernel_prior=trainable, bias_prior=trainable,
        kernel_divergence=KL_N, bias_divergence=KL_N)
    add("trainable_kl", "trainable Normal priors on kernel and Normal bias, closed-form KL",
        "flipout", "float32", activation=None, **normal_bias, kernel_prior=trainable,
        bias_prior=trainable)
    add("trainable_mc", "trainable Normal priors on kernel and Normal bias, Monte Carlo KL at "
        "the forward's W and bias, times 1/50, tanh", "reparam", activation="tanh", **normal_bias,
        kernel_prior=trainable, bias_prior=trainable, kernel_divergence=MC_N,
        bias_divergence=MC_N)
    for dtype in ("float64", "float32"):
        add("trainable_mc", "trainable Normal prior, Monte Carlo KL at an extra draw; "
            "Deterministic bias with a trainable prior (-log p(loc))", "lrt", dtype,
            activation=None, kernel_prior=trainable, bias_prior=trainable,
            kernel_divergence=MC)
    add("det_bias_mixture", "Deterministic bias under the scale mixture: KL = -log p(loc); "
        "kernel N(0, 1) closed form", "lrt", activation="relu", bias_prior=MIXTURE)
    add("det_bias_laplace", "Deterministic bias under Laplace(0.1, 0.5), weight 1/50: "
        "-log p(loc) / 50; kernel Student-t, Monte Carlo at the forward's W", "reparam", "float32",
        activation="tanh", kernel_prior=STUDENT_T, kernel_divergence=MC,
        bias_prior=LAPLACE, bias_divergence=KL_N)
    # second cases of catches one case carried alone: the Laplace tie (|w - loc|' = 0 at w ==
    # loc: loc 0.1 and eps 0 give w == 0.1 exactly), the naive mixture log in float64, "extra"
    ties = (0, 4, 8, 11)                  # flat indices into the (4, 3) kernel
    add("laplace_tie", "Laplace(0.1, 0.5) prior, Monte Carlo KL at the forward's W, which equals "
        "the prior's loc 0.1 exactly at 4 entries (loc 0.1, noise 0): |w - loc|' = 0 there, tanh",
        "reparam", activation="tanh", kernel_prior=LAPLACE, kernel_divergence=MC,
        pinned=(("params/kernel_posterior_loc", ties, 0.1), ("noise/kernel", ties, 0.0)))
    add("laplace_tie_det_bias", "Laplace(0.1, 0.5) prior, Monte Carlo KL times 1/50 at an extra "
        "draw equal to 0.1 at 4 entries; Deterministic bias under the Laplace prior with "
        "bias_posterior_loc[1] == 0.1: |w - loc|' = 0 at the ties, relu", "lrt",
        activation="relu", kernel_prior=LAPLACE, kernel_divergence=MC_N, bias_prior=LAPLACE,
        pinned=(("params/kernel_posterior_loc", ties, 0.1),
                ("noise/kernel_divergence", ties, 0.0), ("params/bias_posterior_loc", (1,), 0.1)))
    add("mixture_narrow", "float64 scale mixture 0.75 N(0, 0.01^2) + 0.25 N(0, 0.001^2) on the "
        "kernel (Monte Carlo, extra draw) and a Normal bias (the forward's bias draw): at |w| > "
        "0.39 both float64 component densities underflow; only logsumexp stays finite", "lrt",
        activation=None, **normal_bias, kernel_prior=NARROW_MIXTURE_64,
        bias_prior=NARROW_MIXTURE_64, kernel_divergence=MC, bias_divergence=MC)
    add("student_t_mc_extra", "MonteCarloKL(sample='extra') on a Student-t kernel prior and on a "
        "Normal bias under Laplace(0.1, 0.5): the noise's kernel_divergence and bias_divergence, "
        "not the forward's draws, relu", "reparam", "float32", activation="relu", **normal_bias,
        kernel_prior=STUDENT_T, bias_prior=LAPLACE, kernel_divergence=MonteCarloKL(sample="extra"),
        bias_divergence=MonteCarloKL(sample="extra"))
    out.append(Case("priors_mixed_64_network2", "network: LRT (relu; Laplace kernel prior, Monte "
                    "Carlo at an extra draw; Normal bias under the scale mixture, Monte Carlo at "
                    "the forward's bias draw) -> Reparameterization (Student-t prior, Monte Carlo "
                    "at the forward's W, times 1/50): kl_mean/total is every layer's mean-mode "
                    "KL, each Monte Carlo term at its own posterior mean", "priors", "float64",
                    lambda: Sequential([
                        ESTIMATORS["lrt"](4, "relu", bias_posterior="normal", kernel_prior=LAPLACE,
                                          bias_prior=MIXTURE, kernel_divergence=MC,
                                          bias_divergence=MC, dtype="float64"),
                        ESTIMATORS["reparam"](3, kernel_prior=STUDENT_T, kernel_divergence=MC_N,
                                              dtype="float64")]), (6, 5)))
    return out


# the cases added after the recording against real TFP (tests/test_reference_priors_vs_tfp.py)
NOT_RECORDED = ("priors_reparam_64_laplace_tie", "priors_lrt_64_laplace_tie_det_bias",
                "priors_lrt_64_mixture_narrow", "priors_reparam_32_student_t_mc_extra",
                "priors_mixed_64_network2")


def dense_variational_cases():
    """TFP's DenseVariational with the tutorial's posterior_mean_field and prior_trainable (or the
    fixed N(0, 1) prior): exact and Monte Carlo KL, with and without kl_weight (1/50, applied as
    its float32 rounding), with and without bias, float64 and float32."""
    out = []

    def add(dtype, kl, prior, klw=False, name="", activation=None, input_shape=(5, 4), **kwargs):
        bits = dtype[-2:]
        tag = f"dv_{bits}_{'exact' if kl else 'mc'}_{prior}{'_klw' if klw else ''}{name}"
        what = (f"DenseVariational, prior {prior}, {'exact' if kl else 'Monte Carlo'} KL"
                f"{', kl_weight 1/50' if klw else ''}{', ' + name[1:].replace('_', ' ') if name else ''}")
        out.append(Case(tag, what, "dense_variational", dtype,
                        lambda: DenseVariational(3, activation, prior=prior,
                                                 kl_weight=SCALED if klw else None,
                                                 kl_use_exact=kl, dtype=dtype, **kwargs),
                        input_shape))

    add("float64", False, "trainable")
    add("float32", False, "trainable")
    add("float64", False, "trainable", klw=True)
    add("float64", False, "fixed", klw=True)
    add("float32", False, "fixed", klw=True)
    add("float64", True, "trainable", klw=True)
    add("float32", True, "trainable")
    add("float64", True, "fixed")
    add("float64", False, "trainable", klw=True, name="_nobias_relu_rank3", activation="relu",
        input_shape=(2, 3, 4), use_bias=False)
    add("float32", True, "fixed", name="_nobias_tanh", activation="tanh", use_bias=False)
    return out


