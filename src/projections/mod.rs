//! Read models folded from the ledger.

pub mod registry;
pub mod runtime_ceilings;
