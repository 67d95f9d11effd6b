"""The GPU electro-thermal model, vectorised over every GPU of a facility (TWIN.md "GPU" 1-6).

Per GPU and 1 s step: leakage L = L45*exp(beta*(Tj-45)); clock fraction phi = min(power-cap, thermal,
soft-derate, HBM) limiters; P = P_base + u*D*phi^alpha + L; throughput TF_max*u*phi; junction and sink
temperatures by backward Euler (the junction time constant, C_j*R_js = 0.6 s, is below the step); a
latched shutdown at 92 C. Limiters use the previous step's temperatures (the loop gain through leakage
is < 1, so this is stable). Arrays are preallocated; a step makes no Python loop over GPUs.
"""

from __future__ import annotations

import numpy as np

from .params import GpuParams

# DCGM clocks-event reasons (DCGM_CLOCKS_EVENT_REASON_*).
REASON_GPU_IDLE = 0x1
REASON_SW_POWER_CAP = 0x4
REASON_HW_SLOWDOWN = 0x8
REASON_SW_THERMAL = 0x20
REASON_HW_THERMAL = 0x40

_LIMITING = 0.999  # a limiter below this counts as active
_TIE = 1e-9


class GpuBank:
    """State and step of n GPUs. `liquid`, `rear` and `front_of` (index of the front-row GPU whose
    exhaust a rear air-cooled GPU breathes, -1 if none) are fixed at construction."""

    def __init__(self, p: GpuParams, liquid: np.ndarray, rear: np.ndarray, front_of: np.ndarray,
                 t_init_c: float | np.ndarray = 25.0):
        self.p = p
        n = self.n = len(liquid)
        self.liquid = np.asarray(liquid, dtype=bool)
        rear = np.asarray(rear, dtype=bool)
        front_of = np.asarray(front_of, dtype=np.int64)
        self.r_sf0 = np.where(
            self.liquid,
            np.where(rear, p.r_sf_liquid_rear, p.r_sf_liquid_front),
            np.where(rear, p.r_sf_air_rear, p.r_sf_air_front),
        )
        self.c_s = np.where(self.liquid, p.c_s_liquid, p.c_s_air)
        # 1 / (2 m cp) at the reference flow: half the coolant's temperature rise per watt.
        self.half_rise0 = np.where(self.liquid, 1 / (2 * p.water_kg_s * p.cp_water), 1 / (2 * p.air_kg_s * p.cp_air))
        preheated = rear & ~self.liquid & (front_of >= 0)
        self.rear_idx = np.flatnonzero(preheated)
        self.rear_partner = front_of[self.rear_idx]
        self.p_cap = np.full(n, p.p_cap_w)

        # State.
        self.tj = np.full(n, 0.0) + t_init_c
        self.ts = self.tj.copy()
        self.tmem = self.tj.copy()
        self.shutdown = np.zeros(n, dtype=bool)
        self.shutdown_events = 0
        self.energy_mj = np.zeros(n)
        self.thermal_violation_us = np.zeros(n)
        self.power_violation_us = np.zeros(n)
        # Outputs of the last step.
        self.power_w = np.zeros(n)
        self.phi = np.ones(n)
        self.phi_pc = np.ones(n)
        self.phi_th = np.ones(n)  # thermal slowdown 89 -> 92 C
        self.phi_soft = np.ones(n)
        self.phi_mem = np.ones(n)
        self.phi_therm = np.ones(n)  # min of the three thermal limiters
        self.u = np.zeros(n)
        self.tflops_max = np.zeros(n)
        # Scratch.
        self._leak = np.empty(n)
        self._x = np.empty(n)
        self._y = np.empty(n)
        self._tf = np.empty(n)
        self._z = np.empty(n)
        self._inv_ud = np.empty(n)
        self._u_version = None
        self._leak_offset = float(np.log(p.leak45_w) - 45.0 * p.beta_per_k)
        self._mask = np.empty(n, dtype=bool)
        self._mask2 = np.empty(n, dtype=bool)
        self._dt = None
        self.set_flow(np.ones(n), np.ones(n))

    def set_flow(self, r_scale: np.ndarray, m_scale: np.ndarray) -> None:
        """Coolant flow relative to the reference: R_sf multiplier and mass-flow multiplier per GPU."""
        self.g2 = 1.0 / (self.r_sf0 * r_scale)
        self.half_rise = self.half_rise0 / m_scale
        self._dt = None  # the implicit solve's coefficients depend on g2

    def _coefficients(self, dt: float) -> None:
        p = self.p
        self._dt = dt
        self._a = p.c_j / dt
        self._g1 = 1.0 / p.r_js
        self._b = self.c_s / dt
        a22 = self._b + self._g1 + self.g2
        self._a22 = a22
        self._inv_det = 1.0 / ((self._a + self._g1) * a22 - self._g1**2)

    def step(self, dt: float, u: np.ndarray, tflops_max: np.ndarray, t_coolant: np.ndarray,
             u_version: int | None = None) -> None:
        """Advance dt seconds with utilisation u and coolant inlet temperature (air or water) per GPU.
        Pass `u_version` (changed whenever u's values change) to skip recomputing 1/(u D)."""
        p = self.p
        if self._dt != dt:
            self._coefficients(dt)
        u_changed = u_version is None or u_version != self._u_version or u is not self.u
        self.u = u
        self.tflops_max = tflops_max
        tj, leak, x, y = self.tj, self._leak, self._x, self._y

        # Leakage at the present junction temperature: exp(beta*Tj + ln L45 - 45 beta).
        np.multiply(tj, p.beta_per_k, out=leak)
        leak += self._leak_offset
        np.exp(leak, out=leak)

        # Power-cap clock fraction ((P_cap - P_base - L) / (u D))^(1/alpha), clipped to [phi_min, 1].
        if u_changed:
            np.multiply(u, p.dynamic_w, out=self._inv_ud)
            np.maximum(self._inv_ud, 1e-9, out=self._inv_ud)
            np.reciprocal(self._inv_ud, out=self._inv_ud)
            self._u_version = u_version
        np.subtract(self.p_cap, p.p_base_w, out=x)
        x -= leak
        x *= self._inv_ud
        np.maximum(x, p.phi_min**p.alpha, out=x)
        np.minimum(x, 1.0, out=x)
        np.power(x, 1.0 / p.alpha, out=self.phi_pc)

        # Thermal limiters: linear 1 at 89 C -> phi_min at 92 C; soft derate; HBM over its limit.
        # (The 89 C and HBM limiters are evaluated only when some GPU is near them: a cheap max first.)
        therm = self.phi_therm
        if tj.max() > p.t_slowdown_c:
            k = (1.0 - p.phi_min) / (p.t_shutdown_c - p.t_slowdown_c)
            np.multiply(tj, -k, out=self.phi_th)
            self.phi_th += 1.0 + k * p.t_slowdown_c
            np.maximum(self.phi_th, p.phi_min, out=self.phi_th)
            np.minimum(self.phi_th, 1.0, out=self.phi_th)
            np.copyto(therm, self.phi_th)
        else:
            self.phi_th.fill(1.0)
            therm.fill(1.0)
        if p.soft_derate_per_k > 0:
            np.multiply(tj, -p.soft_derate_per_k, out=self.phi_soft)
            self.phi_soft += 1.0 + p.soft_derate_per_k * p.soft_knee_c
            np.minimum(self.phi_soft, 1.0, out=self.phi_soft)
            np.minimum(therm, self.phi_soft, out=therm)
        if self.tmem.max() > p.t_hbm_limit_c:
            km = (1.0 - p.phi_min) / p.hbm_throttle_band_k
            np.multiply(self.tmem, -km, out=self.phi_mem)
            self.phi_mem += 1.0 + km * p.t_hbm_limit_c
            np.maximum(self.phi_mem, p.phi_min, out=self.phi_mem)
            np.minimum(self.phi_mem, 1.0, out=self.phi_mem)
            np.minimum(therm, self.phi_mem, out=therm)
        else:
            self.phi_mem.fill(1.0)
        phi = self.phi
        np.minimum(self.phi_pc, therm, out=phi)
        any_down = self.shutdown.any()
        if any_down:
            phi[self.shutdown] = 0.0

        # Power P = P_base + u D phi^alpha + L (phi^2.5 = phi^2 sqrt(phi), much cheaper than pow).
        power = self.power_w
        if p.alpha == 2.5:
            np.sqrt(phi, out=x)
            x *= phi
            x *= phi
        else:
            np.power(phi, p.alpha, out=x)
        np.multiply(u, p.dynamic_w, out=power)
        power *= x
        power += p.p_base_w
        power += leak
        if any_down:
            power[self.shutdown] = 0.0

        # Coolant at the GPU: inlet + half its own rise (+ the front-row exhaust for rear air GPUs).
        tf = self._tf
        np.multiply(power, self.half_rise, out=y)
        np.add(t_coolant, y, out=tf)
        if self.rear_idx.size:
            tf[self.rear_idx] += 2.0 * y[self.rear_partner]

        # Backward Euler on C_j dTj/dt = P - (Tj-Ts)/R_js, C_s dTs/dt = (Tj-Ts)/R_js - (Ts-Tf)/R_sf.
        a, g1 = self._a, self._g1
        rhs1 = x
        np.multiply(tj, a, out=rhs1)
        rhs1 += power
        rhs2 = y
        np.multiply(self.ts, self._b, out=rhs2)
        tf *= self.g2
        rhs2 += tf
        ts_new = tf  # reuse: tf no longer needed
        np.multiply(rhs2, a + g1, out=ts_new)
        np.multiply(rhs1, g1, out=self._z)
        ts_new += self._z
        ts_new *= self._inv_det
        np.multiply(rhs1, self._a22, out=tj)
        rhs2 *= g1
        tj += rhs2
        tj *= self._inv_det
        self.ts, self._tf = ts_new, self.ts

        # HBM: relaxes toward the sink + half the junction-sink rise + self-heating (backward Euler).
        km_ = dt / p.hbm_tau_s
        np.add(tj, self.ts, out=x)
        x *= 0.5
        np.multiply(u, p.hbm_rise_k, out=y)
        x += y
        x *= km_
        self.tmem += x
        self.tmem *= 1.0 / (1.0 + km_)

        # Shutdown latch at 92 C.
        np.greater_equal(tj, p.t_shutdown_c, out=self._mask)
        if self._mask.any():
            new = self._mask & ~self.shutdown
            self.shutdown_events += int(new.sum())
            self.shutdown |= new

        # Counters: energy (mJ) and DCGM violation time (us) while a power or thermal limiter binds.
        np.multiply(power, dt * 1000.0, out=x)
        self.energy_mj += x
        # (mask * dt added to the counter: ufunc `where=` is several times slower here.)
        m, m2 = self._mask, self._mask2
        np.less(self.phi_pc, _LIMITING, out=m)
        np.add(therm, _TIE, out=x)
        np.less_equal(self.phi_pc, x, out=m2)
        m &= m2
        np.multiply(m, dt * 1e6, out=x)
        self.power_violation_us += x
        np.less(therm, _LIMITING, out=m)
        np.add(self.phi_pc, _TIE, out=x)
        np.less_equal(therm, x, out=m2)
        m &= m2
        np.multiply(m, dt * 1e6, out=x)
        self.thermal_violation_us += x

    def clocks_event_reasons(self) -> np.ndarray:
        """DCGM clocks-event reason bitmask per GPU for the last step."""
        bits = np.zeros(self.n, dtype=np.int64)
        bits[self.u < 0.01] |= REASON_GPU_IDLE
        bits[(self.phi_pc < _LIMITING) & (self.phi_pc <= self.phi_therm + _TIE)] |= REASON_SW_POWER_CAP
        soft_binding = (self.phi_soft < _LIMITING) & (self.phi_soft <= np.minimum(self.phi_pc, self.phi_th) + _TIE)
        bits[soft_binding] |= REASON_SW_THERMAL
        bits[(self.phi_th < _LIMITING) | (self.phi_mem < _LIMITING)] |= REASON_HW_THERMAL | REASON_HW_SLOWDOWN
        bits[self.shutdown] = REASON_HW_THERMAL | REASON_HW_SLOWDOWN  # off the bus after a thermal trip
        return bits

    def tflops(self) -> np.ndarray:
        return self.tflops_max * self.u * self.phi

    def reset(self, which: np.ndarray | None = None) -> None:
        """Clear the shutdown latch (a power cycle) of the GPUs selected by `which` (all if None)."""
        if which is None:
            self.shutdown[:] = False
        else:
            self.shutdown[which] = False
