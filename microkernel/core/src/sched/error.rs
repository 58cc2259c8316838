//! Why the scheduler refused a configuration, an entity or a change of its parameters.
//! Every variant carries the values that were refused, and its text names them.

use core::fmt;

use super::{EntityId, MAX_SHARES};

/// Why [`configure`](super::SchedulerOf::configure) was refused. Nothing changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The CPU count is 0 or above what the scheduler holds.
    CpuCount {
        /// The count asked for.
        cpus: usize,
        /// The most the scheduler holds.
        max: usize,
    },
    /// The CPU frequency is 0 MHz.
    ZeroMhz,
    /// Entities exist; the CPUs cannot change under them.
    EntitiesPresent {
        /// How many.
        count: usize,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CpuCount { cpus, max } => {
                write!(f, "{cpus} CPUs cannot be scheduled (1 to {max} can)")
            }
            Self::ZeroMhz => f.write_str("the CPU frequency must be above 0 MHz"),
            Self::EntitiesPresent { count } => write!(
                f,
                "the CPUs cannot be reconfigured while {count} entities exist"
            ),
        }
    }
}

/// Why [`add`](super::SchedulerOf::add) or [`update`](super::SchedulerOf::update) was
/// refused. Nothing changes when one is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdmissionError {
    /// [`configure`](super::SchedulerOf::configure) has not been called.
    NotConfigured,
    /// The entity number is not below the scheduler's capacity.
    IdOutOfRange {
        /// The number given.
        id: EntityId,
        /// The capacity.
        max: usize,
    },
    /// `add` was given a number that is in use.
    IdInUse {
        /// The number given.
        id: EntityId,
    },
    /// `update` was given a number that is not in use.
    NoSuchEntity {
        /// The number given.
        id: EntityId,
    },
    /// Shares must be 1 to [`MAX_SHARES`].
    Shares {
        /// The shares given.
        shares: u32,
    },
    /// A limit (other than 0, unlimited) below the reservation can never be honoured.
    LimitBelowReservation {
        /// The limit given.
        limit_mhz: u32,
        /// The reservation given.
        reservation_mhz: u32,
    },
    /// The affinity mask names none of the CPUs that exist.
    Affinity {
        /// The mask given.
        affinity: u64,
        /// CPUs that exist.
        cpus: usize,
    },
    /// One entity runs on one CPU at a time, so it cannot be guaranteed more than one.
    ReservationAboveCpu {
        /// The reservation given.
        requested_mhz: u32,
        /// One CPU's frequency.
        cpu_mhz: u32,
    },
    /// The CPUs the affinity allows do not have that much capacity left unreserved.
    Reservation {
        /// The reservation given.
        requested_mhz: u32,
        /// Unreserved capacity on the CPUs the affinity allows.
        available_mhz: u32,
    },
    /// Enough capacity is unreserved in total, but not on any one allowed CPU (core).
    Fragmented {
        /// The reservation given.
        requested_mhz: u32,
        /// Unreserved capacity on the CPUs the affinity allows.
        available_mhz: u32,
        /// The most unreserved on any one of them.
        largest_mhz: u32,
    },
}

impl fmt::Display for AdmissionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotConfigured => f.write_str("the scheduler has no CPUs yet"),
            Self::IdOutOfRange { id, max } => write!(
                f,
                "entity {id} is out of range (the scheduler holds {max} entities)"
            ),
            Self::IdInUse { id } => write!(f, "entity {id} already exists"),
            Self::NoSuchEntity { id } => write!(f, "entity {id} does not exist"),
            Self::Shares { shares } => {
                write!(f, "shares must be 1 to {MAX_SHARES}, not {shares}")
            }
            Self::LimitBelowReservation {
                limit_mhz,
                reservation_mhz,
            } => write!(
                f,
                "limit of {limit_mhz} MHz is below the reservation of {reservation_mhz} MHz"
            ),
            Self::Affinity { affinity, cpus } => write!(
                f,
                "affinity {affinity:#x} allows none of the host's {cpus} CPUs"
            ),
            Self::ReservationAboveCpu {
                requested_mhz,
                cpu_mhz,
            } => write!(
                f,
                "reservation of {requested_mhz} MHz cannot be guaranteed: one entity runs on \
                 one CPU at a time and a CPU has {cpu_mhz} MHz"
            ),
            Self::Reservation {
                requested_mhz,
                available_mhz,
            } => write!(
                f,
                "reservation of {requested_mhz} MHz cannot be guaranteed: only {available_mhz} \
                 MHz unreserved"
            ),
            Self::Fragmented {
                requested_mhz,
                available_mhz,
                largest_mhz,
            } => write!(
                f,
                "reservation of {requested_mhz} MHz cannot be guaranteed: {available_mhz} MHz \
                 are unreserved on its CPUs but at most {largest_mhz} MHz on any one of them"
            ),
        }
    }
}

/// An operation named an entity number that is not in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoSuchEntity {
    /// The number given.
    pub id: EntityId,
}

impl fmt::Display for NoSuchEntity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entity {} does not exist", self.id)
    }
}

/// Why [`set_group`](super::SchedulerOf::set_group) was refused. Nothing changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupError {
    /// The entity number is not in use.
    NoSuchEntity {
        /// The number given.
        id: EntityId,
    },
    /// The group already has [`MAX_GROUP_MEMBERS`](super::MAX_GROUP_MEMBERS) members.
    Full {
        /// The group given.
        group: u16,
        /// The most members a group has.
        max: usize,
    },
}

impl fmt::Display for GroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoSuchEntity { id } => write!(f, "entity {id} does not exist"),
            Self::Full { group, max } => write!(
                f,
                "co-scheduling group {group} is full (a group has at most {max} members)"
            ),
        }
    }
}
