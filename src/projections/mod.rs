//! Read models folded from the ledger.

pub mod audit;
pub mod registry;
pub mod replay;
pub mod runtime_ceilings;
