"""Change-point sequences of the quantized weights of two runs, online and in bounded memory (the math
behind the ``changepoints`` pair metric, ``qatrun.metrics.changepoints``).

Pure torch: O(1) state per weight, no history, elementwise kernels only (see ChangePointTracker).
"""

from __future__ import annotations

import torch

from qatrun.metrics.common import ratio

from qatrun.metrics.seqhash import _BASES, _INV_BASES, _NO_LEVEL, _PER_RUN, _PRIMES, _RULES, _RUNS, _flat_levels  # noqa: F401


class ChangePointTracker:
    """Online change-point statistics of two runs' quantized weights; O(1) state per weight.

    Built from each run's level indices at the initial step (one integer tensor per layer, same
    shapes in both runs, values in ``[0, 32767)``, e.g. ``Grid.level_index``); then
    ``update(step, levels_a, levels_b)`` at strictly increasing steps (every step, or with gaps).
    All state lives on the device of ``init_levels_a``. ``sparse=False`` (the default off the
    CPU) updates it with a fixed set of elementwise kernels over all weights (about 70 per run,
    plus 12 for the error integrals) and two scalar reductions: no host sync, no loop over
    weights. Levels are not range-checked after construction (that would sync). ``sparse=True``
    (the default on the CPU, where a sync is free) steps only the weights whose level changed
    (``nonzero`` + gather/scatter), which is much cheaper when few weights change per step; the
    results are identical.

    Definitions (a "change" is a new level seen at an update; a weight that moves and comes back
    between two updates shows no change, so with a stride the metrics are those of the subsampled
    trajectory):

    * **Exact sequence** of a weight: its initial level, then the new level at each change.
      ``sequence_agreement``: fraction of weights whose exact sequences are identical in both
      runs (same length, same levels).
    * **Compressed sequence** (the paper's rule, as its authors compute it): the exact sequence
      with every ``x-y-x-y`` rewritten to ``x-y``, repeatedly until none is left, so
      ``a-b-a-b -> a-b``, ``a-b-a-b-a-b -> a-b``, ``a-b-a-b-a -> a-b-a``, but ``a-b-a`` stays.
      The result does not depend on the order of the rewrites (every overlap of two ``x-y-x-y``
      rewrites to the same word, and rewriting terminates), so it is built online: on a change to
      ``c``, if the reduced sequence ``S`` has ``S[-1] == S[-3]`` and ``c == S[-2]`` (``S + c``
      ends ``x-y-x-y``), drop ``S[-1]`` and do not append ``c``; otherwise append ``c``. A drop is
      never followed by a drop (that needs ``S[-4] == S[-2]``, i.e. ``S`` ending ``y-x-y-x``,
      which a reduced ``S`` does not), and ``S[-1]`` is always the current level, so two levels
      per weight, ``S[-2]`` and ``S[-3]``, suffice: after a drop ``S[-3]`` is set to "none"
      (``S[-4]`` is not kept) and the hash drops its last element by inverting the rolling hash.
      ``sequence_agreement_compressed``: fraction of weights with identical compressed sequences.
    * **Backtrack sequence** (qatrun's earlier "compressed" rule, kept under its own name): a
      change that returns the weight to the level it left at the last change that was appended
      undoes that change (pop instead of push), so ``a-b-a -> a`` and ``a-b-a-b -> a-b``.
      Undos do not chain: after a pop, the next change is always appended (``a-b-c-b-a -> a-b-a``);
      after any append the next change may pop again. ``sequence_agreement_backtrack``.
    * **Change-point error** ``changepoint_error``: over weights whose exact sequences agree, the
      total over their matched change points ``k`` of ``|t_a(k) - t_b(k)|``, divided by their
      total number of changes (the same in both runs); NaN if there are no such change points.
      Computed online with ``sum_k |t_a(k) - t_b(k)| = integral |N_a(t) - N_b(t)| dt`` (``N`` the
      count of changes so far; exact for monotone counting functions with equal final counts):
      each update adds ``|N_a - N_b| * (step - previous step)`` per weight before applying the
      new changes.
    * ``changepoint_error_compressed`` and ``changepoint_error_backtrack``: the same construction
      with that rule's counts (length of its sequence minus 1), over weights whose sequences
      under that rule agree, divided by their count under that rule. Both rules' counts go down
      (on a drop, on a pop), so this is the AREA BETWEEN THE TWO COUNTING FUNCTIONS per remaining
      change, not a sum over matched change points (which needs the step of each surviving change,
      i.e. history); it is NaN when the denominator is 0 (e.g. every agreeing weight reduced to its
      initial level), even if that area is positive.
    * **Oscillation**: a change back to the level held before the previous change (``x-y-x``);
      ``a-b-a-b`` has 2. ``oscillations_a/b``: totals; ``oscillating_fraction_a/b``: fraction of
      weights with at least one. ``changes_a/b``: total number of changes.
    * **Movers** and the **untrained-twin baselines**: ``qatrun.metrics.changepoints``.

    Sequence equality is tested with two polynomial rolling hashes per weight and run
    (``h <- h * B + level + 1 mod P``, P1 = 2^31 - 1 and P2 = 2147483629, different bases),
    together with equal change counts and equal current levels. A false match needs both hashes
    to collide: ~1/(P1*P2) ~ 2e-19 per weight pair for hash-like behaviour (for random bases the
    rigorous bound is (n/P1)(n/P2) for sequences of length n), i.e. negligible even for 25M weights.

    Memory per weight (the two runs together): 2 x (int16 level + int16 previous level + int32
    count + 2 x int32 hash + bool oscillated = 17 B; backtrack: int32 count + 2 x int32 hash + bool
    pop available = 13 B; compressed: int32 count + 2 x int32 hash + 2 x int16 ``S[-2]``, ``S[-3]``
    = 16 B) = 2 x 46 B, plus 3 x int64 accumulated error (exact, backtrack, compressed) + int16
    initial level of run a = 118 bytes per weight (3.0 GB for ResNet-50's 25M weights; inverting the
    hash on a drop or pop saves keeping a copy of it). A dense ``update`` also holds, transiently, one run's new state (46 B/weight) and
    a few int64 temporaries (up to 16 B/weight each).

    ``state_dict()`` holds plain CPU tensors (and the last step): ``load_state_dict`` or
    ``from_state_dict(sd, device=...)`` restores the tracker exactly.
    """

    def __init__(self, init_levels_a, init_levels_b, init_step: int = 0, sparse: bool | None = None):
        self.sizes = [init_levels_a.numel()] if isinstance(init_levels_a, torch.Tensor) else [
            l.numel() for l in init_levels_a]
        la = _flat_levels(init_levels_a, check=True)
        lb = _flat_levels(init_levels_b, check=True).to(la.device)
        if la.shape != lb.shape:
            raise ValueError(f"the two runs have different numbers of weights: {la.numel()} vs {lb.numel()}")
        self.device = la.device
        self.numel = la.numel()
        self.sparse = (self.device.type == "cpu") if sparse is None else bool(sparse)
        self.last_step = int(init_step)
        dev = self.device
        self._P = torch.tensor(_PRIMES, dtype=torch.int64, device=dev).view(2, 1)
        self._B = torch.tensor(_BASES, dtype=torch.int64, device=dev).view(2, 1)
        self._Binv = torch.tensor(_INV_BASES, dtype=torch.int64, device=dev).view(2, 1)
        self.state: dict[str, torch.Tensor] = {}
        for run, lev in zip(_RUNS, (la, lb)):
            n = lev.numel()
            h0 = (lev.to(torch.int32) + 1).unsqueeze(0).repeat(2, 1)  # hash of the 1-element sequence
            st = {
                "level": lev.clone(),
                "prev": torch.full((n,), _NO_LEVEL, dtype=torch.int16, device=dev),
                "count": torch.zeros(n, dtype=torch.int32, device=dev),
                "hash": h0,
                "osc": torch.zeros(n, dtype=torch.bool, device=dev),
                "osc_total": torch.zeros((), dtype=torch.int64, device=dev),
                "bcount": torch.zeros(n, dtype=torch.int32, device=dev),
                "bhash": h0.clone(),
                "can_undo": torch.zeros(n, dtype=torch.bool, device=dev),
                "ccount": torch.zeros(n, dtype=torch.int32, device=dev),
                "chash": h0.clone(),
                "clast2": torch.full((n,), _NO_LEVEL, dtype=torch.int16, device=dev),  # S[-2]
                "clast3": torch.full((n,), _NO_LEVEL, dtype=torch.int16, device=dev),  # S[-3]
            }
            for k, v in st.items():
                self.state[f"{run}.{k}"] = v
        self.state["a.init"] = la.clone()  # for the untrained-twin baselines
        for k in ("dist", "bdist", "cdist"):  # exact, backtrack, compressed
            self.state[k] = torch.zeros(self.numel, dtype=torch.int64, device=dev)

    def _append_hash(self, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(h * B + v) mod P for both hashes; h int32 [2, n], v int64 [n] (level + 1)."""
        return torch.remainder(h.to(torch.int64) * self._B + v, self._P).to(torch.int32)

    def _drop_hash(self, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The hash without its last element ``v`` (level + 1): (h - v) * B^-1 mod P (< 2^62)."""
        return torch.remainder(torch.remainder(h.to(torch.int64) - v, self._P) * self._Binv, self._P).to(torch.int32)

    def _step(self, st: dict[str, torch.Tensor], new: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One run's state after seeing levels ``new``: elementwise, on full or gathered tensors.

        ``st`` maps the per-weight keys (``level``, ``prev``, ...) to tensors whose last dim is
        the weights (all of them, or only the changed ones); returns the new values and the
        number of oscillations added (0-dim). The last element of both reduced sequences is the
        current level, so ``level + 1`` is what a drop or a pop takes off their hashes.
        """
        level, prev, can_undo = st["level"], st["prev"], st["can_undo"]
        changed = new != level
        osc = changed & (new == prev)  # back to the level held before the previous change
        v, v_last = new.to(torch.int64) + 1, level.to(torch.int64) + 1
        # backtrack: pop the last appended change
        undo = osc & can_undo
        bappend = changed & ~undo
        # compressed: S + new ends x-y-x-y -> drop S[-1], do not append
        drop = changed & (level == st["clast3"]) & (new == st["clast2"])
        cappend = changed & ~drop
        h, bh, ch = st["hash"], st["bhash"], st["chash"]
        out = {
            "level": torch.where(changed, new, level),
            "prev": torch.where(changed, level, prev),
            "count": st["count"] + changed,
            "hash": torch.where(changed, self._append_hash(h, v), h),
            "osc": st["osc"] | osc,
            "bcount": st["bcount"] + bappend - undo.to(torch.int32),
            "bhash": torch.where(undo, self._drop_hash(bh, v_last), torch.where(bappend, self._append_hash(bh, v), bh)),
            "can_undo": (can_undo & ~changed) | bappend,
            "ccount": st["ccount"] + cappend - drop.to(torch.int32),
            "chash": torch.where(drop, self._drop_hash(ch, v_last), torch.where(cappend, self._append_hash(ch, v), ch)),
            # append: S[-2], S[-3] <- S[-1], S[-2]; drop: S[-2] <- S[-3] (== S[-1], the old level), S[-3] <- none
            # (S[-4] is not kept; it is never needed, since no drop follows a drop)
            "clast2": torch.where(changed, level, st["clast2"]),
            "clast3": torch.where(drop, _NO_LEVEL, torch.where(cappend, st["clast2"], st["clast3"])),
        }
        return out, osc.sum()

    def _update_run(self, run: str, new: torch.Tensor) -> None:
        s = self.state
        keys = _PER_RUN
        if not self.sparse:
            out, n_osc = self._step({k: s[f"{run}.{k}"] for k in keys}, new)
            for k, v in out.items():
                s[f"{run}.{k}"] = v
        else:  # gather the (few) changed weights, step them, scatter back; syncs on nonzero()
            idx = (new != s[f"{run}.level"]).nonzero().squeeze(1)
            if idx.numel() == 0:
                return
            out, n_osc = self._step({k: s[f"{run}.{k}"][..., idx] for k in keys}, new[idx])
            for k, v in out.items():
                s[f"{run}.{k}"][..., idx] = v
        s[f"{run}.osc_total"].add_(n_osc)

    @torch.no_grad()
    def update(self, step: int, levels_a, levels_b) -> None:
        """Record both runs' level indices at ``step`` (> the previous step)."""
        step = int(step)
        gap = step - self.last_step
        if gap <= 0:
            raise ValueError(f"steps must increase: got {step} after {self.last_step}")
        la = _flat_levels(levels_a).to(self.device, non_blocking=True)
        lb = _flat_levels(levels_b).to(self.device, non_blocking=True)
        if la.numel() != self.numel or lb.numel() != self.numel:
            raise ValueError(f"expected {self.numel} levels per run, got {la.numel()} and {lb.numel()}")
        s = self.state
        # Counting functions are constant on [last_step, step): integrate |N_a - N_b| over it.
        s["dist"].add_((s["a.count"] - s["b.count"]).abs_().to(torch.int64), alpha=gap)
        s["bdist"].add_((s["a.bcount"] - s["b.bcount"]).abs_().to(torch.int64), alpha=gap)
        s["cdist"].add_((s["a.ccount"] - s["b.ccount"]).abs_().to(torch.int64), alpha=gap)
        self._update_run("a", la)
        self._update_run("b", lb)
        self.last_step = step

    @torch.no_grad()
    def compute(self, layers: list[str] | None = None) -> dict[str, torch.Tensor]:
        """The figures over all weights; with ``layers`` (one name per layer of the initial levels)
        also the mover figures of each layer as ``<name>/<figure>``, from the same per-weight flags."""
        s = self.state
        n = torch.tensor(self.numel, dtype=torch.int64, device=self.device)
        same_level = s["a.level"] == s["b.level"]
        zero = torch.zeros((), dtype=torch.int64, device=self.device)
        out, agree = {}, {}
        for rule, (count, hsh, dist) in _RULES.items():
            agree[rule] = ok = (same_level & (s[f"a.{count}"] == s[f"b.{count}"])
                                & (s[f"a.{hsh}"] == s[f"b.{hsh}"]).all(0))
            out[f"sequence_agreement{rule}"] = ratio(ok.sum(), n)
            out[f"changepoint_error{rule}"] = ratio(torch.where(ok, s[dist], zero).sum(),
                                                    torch.where(ok, s[f"a.{count}"].to(torch.int64), zero).sum())
        for run in _RUNS:
            out[f"changes_{run}"] = s[f"{run}.count"].sum(dtype=torch.int64)
            out[f"oscillations_{run}"] = s[f"{run}.osc_total"].clone()
            out[f"oscillating_fraction_{run}"] = ratio(s[f"{run}.osc"].sum(), n)
        flags = self._flags(same_level, agree[""])
        out.update(self._mover_figures({k: v.sum() for k, v in flags.items()}, n))
        if layers is not None:
            if len(layers) != len(self.sizes):
                raise ValueError(f"{len(layers)} layer names for {len(self.sizes)} layers")
            parts = {k: torch.split(v, self.sizes) for k, v in flags.items()}
            for i, (name, size) in enumerate(zip(layers, self.sizes)):
                figs = self._mover_figures({k: p[i].sum() for k, p in parts.items()}, size)
                out.update({f"{name}/{k}": v for k, v in figs.items()})
        return out

    def _flags(self, same_level: torch.Tensor, agree: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-weight booleans behind the mover and baseline figures."""
        s = self.state
        mover = (s["a.count"] > 0) | (s["b.count"] > 0)
        stayed = s["a.level"] == s["a.init"]  # an untrained twin agrees here
        still = s["a.count"] == 0  # ... and its one-level sequence agrees here
        return {"mover": mover, "mover_same": mover & same_level, "mover_agree": mover & agree,
                "stayed": stayed, "mover_stayed": mover & stayed, "still": still, "mover_still": mover & still}

    @staticmethod
    def _mover_figures(c: dict[str, torch.Tensor], n) -> dict[str, torch.Tensor]:
        """Figures from the counts of ``_flags`` over ``n`` weights."""
        return {
            "mover_fraction": ratio(c["mover"], n),
            "mover_agreement": ratio(c["mover_same"], c["mover"]),
            "mover_sequence_agreement": ratio(c["mover_agree"], c["mover"]),
            "quantized_agreement_untrained": ratio(c["stayed"], n),
            "mover_agreement_untrained": ratio(c["mover_stayed"], c["mover"]),
            "sequence_agreement_untrained": ratio(c["still"], n),
            "mover_sequence_agreement_untrained": ratio(c["mover_still"], c["mover"]),
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Plain tensors, always copied to the CPU (no device-memory duplicate; syncs)."""
        sd = {k: v.detach().to("cpu", copy=True) for k, v in self.state.items()}
        sd["last_step"] = torch.tensor(self.last_step, dtype=torch.int64)
        sd["sizes"] = torch.tensor(self.sizes, dtype=torch.int64)
        sd["hash_params"] = torch.tensor([*_PRIMES, *_BASES], dtype=torch.int64)
        return sd

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        expected = set(self.state) | {"last_step", "hash_params", "sizes"}
        if "a.chash_before" in sd:  # its "compressed" state is the backtrack rule's; the authors' needs the history
            raise ValueError("state dict was written before the compressed rule became the authors' (x-y-x-y -> "
                             "x-y), without the history that rule needs; it cannot be continued: restart the run")
        if set(sd) != expected:
            raise ValueError(f"state dict keys differ: missing {sorted(expected - set(sd))}, "
                             f"unexpected {sorted(set(sd) - expected)}")
        if sd["hash_params"].tolist() != [*_PRIMES, *_BASES]:
            raise ValueError("state dict was written with different hash parameters")
        for k, v in self.state.items():
            if sd[k].shape != v.shape or sd[k].dtype != v.dtype:
                raise ValueError(f"state dict entry {k!r}: {tuple(sd[k].shape)} {sd[k].dtype}, "
                                 f"expected {tuple(v.shape)} {v.dtype}")
        for k, v in self.state.items():
            v.copy_(sd[k])
        self.last_step = int(sd["last_step"])
        self.sizes = sd["sizes"].tolist()

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], device=None, sparse: bool | None = None) -> "ChangePointTracker":
        """A tracker restored from :meth:`state_dict` on ``device`` (default: where ``sd`` lies)."""
        lev = sd["a.level"].to(device) if device is not None else sd["a.level"]
        t = cls([lev], [lev], sparse=sparse)
        t.load_state_dict(sd)
        return t
