"""The range an in-class estimator's alpha may take (docs/method.md: the twin trains at alpha x the lr).

Both ends are about the twin's step, lr x alpha, and the run's own gradients, g of alpha's size:

* below ALPHA_FLOOR the twin does not move in any run qatrun can afford, and every figure over its
  distance travelled is a 0/0 (tanh reaches it at e = k / n_bins = 10.28: k = 30.8 on 2 bits, 154 on 4);
* above ALPHA_CEILING one step moves a weight by lr x alpha grid ranges: the weights overflow to inf
  within a few steps and nothing after that is a number (a shape of 1e38 ended in TensorBoard's
  "The histogram is empty"). pwl's own alpha has always been bounded there.
"""

from __future__ import annotations

ALPHA_FLOOR = 1e-6
ALPHA_CEILING = 1e6


def check_alpha(what: str, alpha: float, remedy: str, remedy_high: str | None = None) -> float:
    """``alpha`` when within [ALPHA_FLOOR, ALPHA_CEILING]; else a one-line ValueError naming ``what``, the
    alpha and the remedy (``remedy_high`` above the ceiling, when it differs)."""
    if alpha > ALPHA_CEILING:
        raise ValueError(f"{what}: alpha = {alpha:.3g} is above the ceiling ALPHA_CEILING = {ALPHA_CEILING:g}: its "
                         f"twin (lr x alpha) and the run's own gradients would overflow within a few steps; "
                         f"{remedy_high or remedy}")
    if not alpha >= ALPHA_FLOOR:  # NaN too
        raise ValueError(f"{what}: alpha = {alpha:.3g} is below the floor ALPHA_FLOOR = {ALPHA_FLOOR:g}: its twin "
                         f"(lr x alpha) would never move and the pair would measure 0/0; {remedy}")
    return alpha
