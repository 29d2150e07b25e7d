"""The paper's own words behind every claim of the claims table.

``QUOTES[claim id]`` is the surviving text of *When pre-training hurts LoRA fine-tuning*
(the text extraction in ``shared/paper/when-pretraining-hurts-lora.txt``) that the claim
tests: one or more verbatim fragments joined by `` ... ``. The extraction dropped most
inline mathematics (symbols, numbers, degrees); ``LOST[claim id]`` says what is missing
there and which readings the claim checks. A claim's criterion (the ``expected`` column)
is taken from these words, never from our output.

:func:`statement` builds the ``statement`` column: the quotation, the note on lost
symbols and, after ``Tested:``, the claim in our notation.
"""

from __future__ import annotations

QUOTES: dict[str, str] = {
    # Sec. 3.2 (a), Fig. 1
    "L-monotone": "Fig. 1 (see right panel) shows that indeed increases monotonically with .",
    "E2-closed-form": "The associated characteristic time scale is given by ... Note that this "
                      "time scale diverges as :",
    "L-initial-mse": "As expected, larger values of yield smaller initial test mean squared "
                     "error, reflecting stronger initial alignment with the teacher (left panel "
                     "of Fig. 1).",
    "L-later-escape": "despite their worse initial performance, models initialized with smaller "
                      "signal strength converges to the global optimum significantly faster: "
                      "highly pre-trained models (e.g. ) exhibit a pronounced delay before "
                      "convergence.",
    # Sec. 3.2 (b)
    "IE1-monotone": "For and sigmoid, Fig. 1 (see right panel) shows that governing escape "
                    "grows monotonically with .",
    "IE1-relu-dip": "ReLU exhibits a mild deviation from this monotone trend at relatively small "
                    "signal strengths: as increases from to , decreases slightly, suggesting "
                    "that a weakly more informative pre-trained weight can initially accelerate "
                    "escape. However, once exceeds , the behavior aligns with the other "
                    "activations.",
    "IE1-diverge-at-1": "A common feature across all these activation functions is the "
                        "divergence of the as ,",
    "H-correlation-loss": "Notably, the gradient of the population loss is completely "
                          "independent of the signal strength .",
    # Sec. 3.1, Prop. 1
    "P1-sgd-escape": "Then the time at which the dynamics escapes the correlated search phase "
                     "satisfies ... Prop. 1 shows that the exit time scales as .",
    # Sec. 3.2 (c), Prop. 2-3, Fig. 2
    "P2-odd-singularity": "Consider the well-specified setting with pure Hermite activation "
                          "function of odd degree . Let be as in (8). There exists at least one "
                          "such that . Thus at the exit time diverges.",
    "P2-shift-right": "This critical value shifts to the right as the degree of the Hermite "
                      "polynomial increases.",
    "E-even-singularities": "Using Prop. 1, we observe that for even Hermite degrees that are "
                            "sufficiently large, two singularities appear. Indeed, as shown in "
                            "panel (b) of Fig. 2, where is reported for pure even Hermite "
                            "activation functions, no singularity is observed for and , whereas "
                            "clear singularities emerge for .",
    "P3-mu0": "A distinct regime emerges, however, as : remains finite across all degrees, a "
              "fact for which Prop. 3 provides a mathematical guarantee. ... In contrast, near "
              "zero, odd and even degrees behave differently, with odd degrees exhibiting a "
              "pronounced slowdown",
    "P3-mu1": "On both sides of this singularity, exhibits a parabola-like behavior, with "
              "again divergences as and .",
    "P3-high-degree-near-1": "Interestingly, as , higher Hermite degrees yield a faster escape "
                             "than lower ones, a counterintuitive behavior given the findings "
                             "of [7].",
    "P3-reversed-near-0": "This qualitative behavior is reversed in the regime , which agrees "
                          "with Ben Arous et al [7].",
    "I-he3-delay": "This confirms that the dynamics indeed take a significantly longer time "
                   "for , which is close to the singularity, compared to .",
    # Sec. 3.3, Fig. 2 (c, d)
    "S-odd-removed": "Most notably, for odd Hermite activation functions, the singularities "
                     "previously observed in the matching case disappear after squaring the "
                     "labels,",
    "S-reverse-x-erf": "In particular, for and erf, stronger alignment of the pre-trained "
                       "weight with the target direction (larger ) now leads to faster escape "
                       "from the correlated search phase, in sharp contrast with the "
                       "matching-activation case.",
    "S-no-divergence-at-1": "Moreover, for x, ReLU, and erf, the exit time no longer diverges "
                            "as , unlike what was observed previously.",
    "S-sigmoid-little-effect": "For the sigmoid activation, squaring the labels has little "
                               "effect on ,",
    "S-hermite-decreasing": "Panel (d) of Fig. 2 shows that the general trend observed for "
                            "activation functions under this transformation is an overall "
                            "decreasing behavior of as increases.",
    # App. A.1, Fig. 3
    "A1-same-phenomenology": "The key takeaway is that the same phenomenology is observed as "
                             "for the student model (11).",
    "A1-same-escape": "computing the gradient with respect to or shows that this additional "
                      "term has no effect on the dynamics of and .",
    "A1-p-stays-small": "with high probability, the dot product of two random vectors is of "
                        "order , and these vectors therefore remain orthogonal throughout the "
                        "dynamics.",
    # App. B.3-B.4, Fig. 4
    "B3-student-ie": "As a consequence, the information exponent of the resulting activation "
                     "function is at most , independently of the choice of activation.",
    "B4-square-ie": "As a consequence, squaring a pure Hermite activation reduces the "
                    "information exponent of the teacher to , independently of the original "
                    "degree .",
    "B4-two-stage-escape": "this learning paradigm enables a much faster escape from the "
                           "correlated search phase—compared to the standard training "
                           "procedure shown in Figure 9—",
    "B4-two-stage-recovery": "and subsequently allows the student to recover the teacher "
                             "direction during the descent phase.",
    # App. E.3, Fig. 5
    "E3-overtraining": "Figure 5 provides additional evidence of catastrophic overtraining "
                       "across linear, erf, ReLU, and sigmoid activations over a wide range of "
                       "pre-training alignments,",
    # App. G
    "G-descent-recovery": "In the matching activation setting, the above propositions "
                          "guarantee that once the dynamics escape the correlated search phase, "
                          "they converge so as to recover the teacher direction.",
    # App. E.5, Fig. 6-7
    "E5-mean": "For even-degree Hermite activations, the nonzero mean is This nonzero mean "
               "induces an additional contribution to the early-time dynamics of the order "
               "parameters and . Importantly, this effect vanishes continuously as , as "
               "illustrated in Fig. 6.",
    "E5-mean-degree": "induced by such activations, whose magnitude increases with the Hermite "
                      "degree but vanishes in the limit ;",
    "E5-plateau": "Numerically, this manifests as the student dynamics after escaping the "
                  "correlated search phase exhibiting an initial plateau for small , before "
                  "escaping toward alignment, whereas this plateau progressively disappears as "
                  "increases (see Fig. 7).",
    # App. F, Fig. 8
    "F-energy-damped": "Therefore, if then and the dynamics monotonically dissipate energy, "
                       "consistent with a frictional interpretation.",
    "F-energy-amplified": "Conversely, if then and the velocity-dependent term injects energy "
                          "into the system, leading to effective self-amplification.",
    "F-flat-potential": "For any , this potential is concave and symmetric around , with a "
                        "curvature that vanishes as .",
    # App. I, Fig. 9
    "I-singular-delay": "Crucially, near the singular regime at , a significant delay in "
                        "escaping the search phase is observed numerically, in agreement with "
                        "the theory.",
    "P1-he3-prediction": "The observations reported here are fully consistent with the "
                         "theoretical predictions.",
    # App. K, Fig. 13-14
    "K1": "In particular, for linear activations the leading-order escape depends only on the "
          "collective mismatch vector , and not on the rank : each rank direction obeys the "
          "same reduced two-dimensional dynamics.",
    "K1b": "For each case, we compute the characteristic escape time from the search phase; "
           "see Fig. 13.",
    "K2": "For the activation, we also integrate the full dynamics and show in Fig. 14 that the "
          "pretrained weights guide the search phase, whereas the rank controls the final "
          "attainable loss.",
    "K2b": "we observed that the pretrained weights primarily control the escape from the "
           "search phase, while the LoRA rank mainly shapes the subsequent descent phase and "
           "the final attainable loss.",
    # Sec. 3.3, Table 1, App. J
    "J1": "Table 1 reports seed-matched results at fixed fine-tuning budgets and shows the same "
          "qualitative decoupling predicted by the theory: later checkpoints can have higher "
          "source accuracy while adapting worse downstream under the constrained LoRA update.",
}

LOST: dict[str, str] = {
    "L-monotone": "lost: tau and mu",
    "E2-closed-form": "lost: the formulas of a, b, tau (E.2); checked against the closed form "
                      "derived from b = -(1-mu), a = 1",
    "L-initial-mse": "lost: mu",
    "L-later-escape": "lost: the example value of mu",
    "IE1-monotone": "lost: erf, tau, mu",
    "IE1-relu-dip": "lost: the interval of mu (from _ to _) and the value after which ReLU "
                    "aligns; readings checked: a decrease anywhere on [0, x] for x in "
                    "{0.1, 0.2, 0.3, 0.5}",
    "IE1-diverge-at-1": "lost: tau and the limit mu -> 1",
    "H-correlation-loss": "lost: mu",
    "P1-sgd-escape": "lost: equation (9) and the scaling; read as t_exit ~ tau log(R sqrt d) "
                     "(App. E.1, eq. 60-61)",
    "P2-odd-singularity": "lost: K >= 3, mu* in (0, 1), b(mu*) = 0",
    "E-even-singularities": "lost: the three degrees (no singularity for He_? and He_?, clear "
                            "singularities for He_?); readings checked as separate rows",
    "P3-mu0": "lost: mu -> 0 and tau; Prop. 3's formula is lost",
    "P3-mu1": "lost: tau and the limits mu -> 0, mu -> 1 (Prop. 3's exponents are lost; "
              "exponent 2 derived from b ~ (1-mu), a(1) > 0)",
    "P3-high-degree-near-1": "lost: mu -> 1",
    "P3-reversed-near-0": "lost: mu -> 0",
    "I-he3-delay": "lost: the two values of mu (read as 0.3 near mu* = 0.3207, and 0.6)",
    "S-reverse-x-erf": "lost: x (linear) and mu",
    "S-no-divergence-at-1": "lost: mu -> 1",
    "S-sigmoid-little-effect": "lost: tau",
    "S-hermite-decreasing": "lost: He_K, tau and mu",
    "A1-same-escape": "lost: u, w, m (and p)",
    "A1-p-stays-small": "lost: O(1/sqrt d)",
    "B3-student-ie": "lost: 2",
    "B4-square-ie": "lost: 2 and K",
    "B4-two-stage-escape": "lost: mu (read as 0.3 near mu* = 0.3207 of He_3, Fig. 4 caption "
                           "lost)",
    "E5-mean": "lost: the formula of the mean and mu -> 1",
    "E5-mean-degree": "lost: mu -> 1",
    "E5-plateau": "lost: mu; the activation is He_4 in our reading (Fig. 7 caption lost)",
    "F-energy-damped": "lost: a > 0 and dE/dt <= 0",
    "F-energy-amplified": "lost: a < 0 and dE/dt >= 0",
    "F-flat-potential": "lost: mu, m and mu -> 1",
    "I-singular-delay": "lost: mu* (He_3: 0.3207 by our computation)",
    "K1": "lost: (1 - mu_k) and r",
    "K2": "lost: He_2",
}


def statement(cid: str, tested: str) -> str:
    """The ``statement`` column of claim ``cid``: the paper's words (when known), the note
    on symbols lost in extraction, then ``Tested:`` and the claim in our notation.

    A claim id with a suffix (``E-even-singularities/A``) quotes its base id.
    """
    base = cid.split("/")[0]
    q = QUOTES.get(base)
    if q is None:
        return tested
    lost = LOST.get(base)
    note = f" [{lost}]" if lost else ""
    return f'Paper: "{q}"{note}. Tested: {tested}'
