//! Admission control: validates an entity's parameters and finds the CPU that holds its
//! reservation, or says how much is missing.
//!
//! The rule: a reservation is booked whole on one allowed CPU. Without hyper-threading
//! each CPU has `mhz_per_cpu` to book; with it the two threads of a core share one
//! `mhz_per_cpu` (a core does not get faster by running two threads). The CPU chosen is
//! the best fit — the allowed one whose core has the least room that is still enough —
//! which keeps large pieces free for large reservations. On `update` the entity's own
//! booking counts as free, and it stays where it is if the new amount fits there.

use super::{AdmissionError, MAX_SHARES, Params, SchedulerOf, Topology};

/// What admission decided for a valid set of parameters.
pub(super) struct Admitted {
    /// The effective affinity (allowed CPUs that exist).
    pub(super) allowed: u64,
    /// Where the reservation is booked (none without a reservation).
    pub(super) res_cpu: Option<usize>,
}

impl<const CPUS: usize, const ENTITIES: usize> SchedulerOf<CPUS, ENTITIES> {
    /// Checks `params` for a new entity (`current` = None) or for entity `current`.
    pub(super) fn admit(
        &self,
        params: Params,
        current: Option<usize>,
    ) -> Result<Admitted, AdmissionError> {
        if self.cpu_count == 0 {
            return Err(AdmissionError::NotConfigured);
        }
        let Params {
            shares,
            reservation_mhz,
            limit_mhz,
            affinity,
        } = params;
        if shares == 0 || shares > MAX_SHARES {
            return Err(AdmissionError::Shares { shares });
        }
        if limit_mhz != 0 && limit_mhz < reservation_mhz {
            return Err(AdmissionError::LimitBelowReservation {
                limit_mhz,
                reservation_mhz,
            });
        }
        let allowed = match affinity {
            0 => self.online(),
            mask => mask & self.online(),
        };
        if allowed == 0 {
            return Err(AdmissionError::Affinity {
                affinity,
                cpus: self.cpu_count,
            });
        }
        if reservation_mhz == 0 {
            return Ok(Admitted {
                allowed,
                res_cpu: None,
            });
        }
        if reservation_mhz > self.mhz {
            return Err(AdmissionError::ReservationAboveCpu {
                requested_mhz: reservation_mhz,
                cpu_mhz: self.mhz,
            });
        }
        let own = current
            .map(|index| &self.entities[index])
            .filter(|e| e.reserves())
            .map(|e| (usize::from(e.res_cpu), e.params.reservation_mhz));
        if let Some((cpu, _)) = own
            && allowed & (1 << cpu) != 0
            && self.core_free(cpu, own) >= reservation_mhz
        {
            return Ok(Admitted {
                allowed,
                res_cpu: Some(cpu),
            });
        }
        let mut best: Option<(u32, u32, usize)> = None;
        for cpu in cpus_in(allowed) {
            let free = self.core_free(cpu, own);
            if free < reservation_mhz {
                continue;
            }
            let key = (free, self.cpus[cpu].reserved_mhz, cpu);
            if best.is_none_or(|b| key < b) {
                best = Some(key);
            }
        }
        if let Some((_, _, cpu)) = best {
            return Ok(Admitted {
                allowed,
                res_cpu: Some(cpu),
            });
        }
        let (mut available_mhz, mut largest_mhz) = (0, 0);
        for cpu in cpus_in(allowed) {
            // Count a core once: its odd thread only if the even one is not allowed.
            if let Some(sibling) = self.sibling(cpu)
                && sibling < cpu
                && allowed & (1 << sibling) != 0
            {
                continue;
            }
            let free = self.core_free(cpu, own);
            available_mhz += free;
            largest_mhz = largest_mhz.max(free);
        }
        Err(if available_mhz < reservation_mhz {
            AdmissionError::Reservation {
                requested_mhz: reservation_mhz,
                available_mhz,
            }
        } else {
            AdmissionError::Fragmented {
                requested_mhz: reservation_mhz,
                available_mhz,
                largest_mhz,
            }
        })
    }

    /// The other thread of `cpu`'s core, if hyper-threading and it exists.
    pub(super) fn sibling(&self, cpu: usize) -> Option<usize> {
        match self.topology {
            Topology::Flat => None,
            Topology::SmtPairs => Some(cpu ^ 1).filter(|&s| s < self.cpu_count),
        }
    }

    /// Reservations booked on `cpu`'s core.
    pub(super) fn core_reserved(&self, cpu: usize) -> u32 {
        let sibling = self.sibling(cpu).map_or(0, |s| self.cpus[s].reserved_mhz);
        self.cpus[cpu].reserved_mhz + sibling
    }

    /// Unreserved capacity of `cpu`'s core, counting `own` (an entity's current booking:
    /// CPU and MHz) as free.
    pub(super) fn core_free(&self, cpu: usize, own: Option<(usize, u32)>) -> u32 {
        let mine = match own {
            Some((at, mhz)) if at == cpu || self.sibling(cpu) == Some(at) => mhz,
            _ => 0,
        };
        (self.mhz + mine).saturating_sub(self.core_reserved(cpu))
    }

    /// Unreserved MHz on the CPUs `affinity` allows (0 = all), each core counted once —
    /// what a new reservation there could at most be given in total.
    pub fn unreserved_mhz(&self, affinity: u64) -> u32 {
        let allowed = match affinity {
            0 => self.online(),
            mask => mask & self.online(),
        };
        cpus_in(allowed)
            .filter(|&cpu| {
                !self
                    .sibling(cpu)
                    .is_some_and(|s| s < cpu && allowed & (1 << s) != 0)
            })
            .map(|cpu| self.core_free(cpu, None))
            .sum()
    }
}

/// The CPU numbers in `mask`, lowest first.
pub(super) fn cpus_in(mut mask: u64) -> impl Iterator<Item = usize> {
    core::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let cpu = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        Some(cpu)
    })
}
