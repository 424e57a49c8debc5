"""The coefficient of the KL penalty to the reference policy, fixed or adapted toward a target."""

from __future__ import annotations


class FixedKLController:
    """A constant KL coefficient; ``update`` exists so the loop can treat both kinds alike."""

    def __init__(self, value: float) -> None:
        self.value = float(value)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt."""

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, d: dict[str, float]) -> None:
        self.value = float(d["value"])


class AdaptiveKLController:
    """Proportional controller of Ziegler et al. (2019) that steers the observed KL to ``target``.

    After each batch: err = clip(current_kl / target - 1, -0.2, 0.2) and
    value *= 1 + err * n_steps / horizon. The clip bounds how fast the coefficient can move
    when one batch's KL is far off; ``horizon`` sets the time scale, in samples.
    """

    def __init__(self, init_value: float, target: float, horizon: int) -> None:
        if target <= 0:
            raise ValueError(f"adaptive KL target must be > 0, got {target}")
        if horizon <= 0:
            raise ValueError(f"adaptive KL horizon must be > 0, got {horizon}")
        self.value = float(init_value)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        err = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + err * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, d: dict[str, float]) -> None:
        self.value = float(d["value"])


def make_kl_controller(
    kl_coef: float, adaptive: bool, target: float, horizon: int
) -> FixedKLController | AdaptiveKLController:
    """The adaptive controller starting at ``kl_coef`` when ``adaptive``, else a fixed one."""
    if adaptive:
        return AdaptiveKLController(kl_coef, target, horizon)
    return FixedKLController(kl_coef)
