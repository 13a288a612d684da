//! Read models folded from the ledger.

pub mod audit;
pub mod histogram;
pub mod monitoring;
pub mod registry;
pub mod replay;
pub mod runtime_ceilings;

/// The read models the registry's follower keeps beside the registry, fed the same events.
#[derive(Default)]
pub struct Views {
    pub audit: audit::AuditIndex,
    pub monitoring: monitoring::Monitoring,
}
