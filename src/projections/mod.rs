//! Read models folded from the ledger.

pub mod registry;
