//! Server protocols: for each channel protocol, its operation names in a fixed order.
//!
//! Operation *i* of a protocol is bit *i* of the operation mask in a client's badge
//! (`esker_abi::badge`). The manifest compiler turns `clients = { hostd = ["status"] }`
//! into that mask, the capability audit reasons about it, and each server's channel runtime
//! refuses a request whose bit is missing. The request enum of each protocol lists its
//! variants in exactly this order (checked by tests next to the enums).
#![no_std]
#![forbid(unsafe_code)]

/// Every protocol: `(name, operations)`.
pub const PROTOCOLS: &[(&str, &[&str])] = &[
    ("auth", auth::OPERATIONS),
    ("storage", storage::OPERATIONS),
    ("vswitch", vswitch::OPERATIONS),
    ("hostd", hostd::OPERATIONS),
    ("vmx", vmx::OPERATIONS),
];

/// The operations of a protocol, if it exists.
pub fn operations(protocol: &str) -> Option<&'static [&'static str]> {
    PROTOCOLS
        .iter()
        .find(|(name, _)| *name == protocol)
        .map(|(_, ops)| *ops)
}

/// The index (badge bit) of an operation.
pub fn operation_index(protocol: &str, operation: &str) -> Option<u32> {
    operations(protocol)?
        .iter()
        .position(|op| *op == operation)
        .map(|i| i as u32)
}

/// `vmkauthd`: authentication and tickets.
pub mod auth {
    /// Operation names, in badge-bit order.
    pub const OPERATIONS: &[&str] = &["status", "issue_ticket", "verify_ticket"];
}

/// `storage`: datastore and virtual disks.
pub mod storage {
    /// Operation names, in badge-bit order.
    pub const OPERATIONS: &[&str] = &["status"];
}

/// `vswitch`: the virtual switch.
pub mod vswitch {
    /// Operation names, in badge-bit order.
    pub const OPERATIONS: &[&str] = &["status"];
}

/// `hostd`: host management.
pub mod hostd {
    /// Operation names, in badge-bit order.
    pub const OPERATIONS: &[&str] = &["status"];
}

/// `vmx`: the per-VM monitor's control channel.
pub mod vmx {
    /// Operation names, in badge-bit order.
    pub const OPERATIONS: &[&str] = &["status"];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_protocol_starts_with_status_and_fits_a_badge() {
        for (name, ops) in PROTOCOLS {
            assert_eq!(ops.first(), Some(&"status"), "{name}");
            assert!(
                ops.len() <= 32,
                "{name} has more operations than badge bits"
            );
        }
        assert_eq!(operation_index("auth", "issue_ticket"), Some(1));
        assert_eq!(operation_index("auth", "fly"), None);
        assert_eq!(operations("nope"), None);
    }
}
