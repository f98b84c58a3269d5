"""The adaptive augmentation strength: :class:`AdaController` (the r_t heuristic) and
:func:`rv_heuristic` (the validation-set heuristic r_v)."""

from __future__ import annotations

import torch

from pyops import _checks
from pyops._budget import budget
from pyops._interop import accepts_arrays
from pyops.ada.pipeline import AugmentPipe


class AdaController:
    """Adjusts the augmentation strength ``p`` with the r_t heuristic.

    Feed it the discriminator's outputs on real images every step (:meth:`update`); every
    ``interval`` steps it computes r_t = E[sign(D(real))] over those steps (summed over all
    processes with ``torch.distributed.all_reduce`` when a process group is initialised) and
    moves ``p`` by ``sign(r_t - target) * N / (kimg * 1000)``, N the number of images seen in
    the interval (batch * interval, over all processes), clamped at 0. No host synchronisation:
    ``p`` and the statistics stay tensors on the logits' device.

    Args:
        pipe: the :class:`AugmentPipe` whose ``p`` buffer is adjusted in place, or ``None``
            (then :attr:`p` is the controller's own tensor).
        target: the r_t target (0.6 in the paper). interval: steps between adjustments (4).
        kimg: thousands of images for ``p`` to go from 0 to 1 at full speed (500).
    """

    def __init__(self, pipe: AugmentPipe | None = None, target: float = 0.6, interval: int = 4, kimg: float = 500):
        fn = "AdaController"
        if pipe is not None and not isinstance(pipe, AugmentPipe):
            _checks.fail(fn, f"pipe must be a pyops.AugmentPipe or None, got {_checks.describe(pipe)}", TypeError)
        self.interval = _checks.integer(fn, "interval", interval, min=1)
        self.target = _checks.number(fn, "target", target)
        self.kimg = _checks.number(fn, "kimg", kimg, min=0)
        if self.kimg == 0:
            _checks.fail(fn, "kimg must be > 0, got 0")
        self.pipe = pipe
        self._own_p = torch.zeros(())  # used when there is no pipe
        self._stats: torch.Tensor | None = None  # [sum of signs, count]
        self._steps = 0
        self.r_t: torch.Tensor | None = None  # the last r_t (a 0-dim tensor)

    @property
    def p(self) -> torch.Tensor:
        """The augmentation strength (the pipe's ``p`` buffer when there is a pipe; looked up on
        every use, so moving the pipe to another device after creating the controller is fine)."""
        return self.pipe.p if self.pipe is not None else self._own_p

    def state_dict(self) -> dict:
        """The adjustment state, so that a resumed run continues where it stopped: the step count,
        the statistics of the unfinished interval, the last r_t and ``p`` (also in the pipe's own
        state_dict when there is a pipe)."""
        return {
            "steps": self._steps,
            "stats": None if self._stats is None else self._stats.detach().clone(),
            "r_t": None if self.r_t is None else self.r_t.detach().clone(),
            "p": self.p.detach().clone(),
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (``p`` into the pipe's buffer when there is one)."""
        fn = "AdaController.load_state_dict"
        if not isinstance(state, dict) or set(state) != {"steps", "stats", "r_t", "p"}:
            keys = sorted(state) if isinstance(state, dict) else _checks.describe(state)
            _checks.fail(fn, f"state must be a dict with keys ['p', 'r_t', 'stats', 'steps'], got {keys}")
        self._steps = _checks.integer(fn, "state['steps']", state["steps"], min=0)
        p = self.p
        self._stats = None if state["stats"] is None else state["stats"].to(device=p.device, dtype=torch.float64).clone()
        self.r_t = None if state["r_t"] is None else state["r_t"].to(p.device).clone()
        p.copy_(torch.as_tensor(state["p"]).to(p.device, p.dtype))

    @torch.no_grad()
    @budget(forward=16)
    def update(self, real_logits: torch.Tensor) -> None:
        """Record D's outputs on a batch of reals; adjusts ``p`` every ``interval`` calls."""
        if not isinstance(real_logits, torch.Tensor):
            raise TypeError(f"pyops.AdaController.update: real_logits must be a tensor, got {type(real_logits).__name__}")
        signs = torch.sign(real_logits.detach().float())
        count = torch.full((), float(signs.numel()), dtype=torch.float64, device=signs.device)  # no host copy
        step = torch.stack([signs.sum(dtype=torch.float64), count])
        self._stats = step if self._stats is None else self._stats + step
        self._steps += 1
        if self._steps % self.interval == 0:
            self._adjust()

    def _adjust(self) -> None:
        stats = self._stats
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stats)
        self._stats = None
        self.r_t = (stats[0] / stats[1].clamp(min=1)).float()
        adjust = torch.sign(self.r_t - self.target) * stats[1].float() / (self.kimg * 1000)
        p = self.p
        new_p = (p.to(adjust.device).float() + adjust).clamp(min=0)
        p.copy_(new_p.to(p.device, p.dtype))


@budget(forward=10)
@accepts_arrays
def rv_heuristic(d_train: torch.Tensor, d_validation: torch.Tensor, d_generated: torch.Tensor) -> torch.Tensor:
    """The validation overfitting heuristic r_v = (E[D_train] - E[D_validation]) /
    (E[D_train] - E[D_generated]): 0 without overfitting, 1 when validation images look as fake
    as generated ones (the paper's code targets 0.5). Returns a 0-dim tensor."""
    for name, t in (("d_train", d_train), ("d_validation", d_validation), ("d_generated", d_generated)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"pyops.rv_heuristic: {name} must be a tensor of D outputs, got {_checks.describe(t)}")
        if t.numel() == 0:
            raise ValueError(f"pyops.rv_heuristic: {name} must be a non-empty tensor of D outputs")
    tr, va, ge = (t.detach().double().mean() for t in (d_train, d_validation, d_generated))
    return ((tr - va) / (tr - ge)).float()
