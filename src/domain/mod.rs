//! The registry as deciders: `decide(&Registry, actor, Command) -> Decision` and
//! `evolve(Registry, &Recorded) -> Registry`. Pure, no I/O: the API shell supplies ids,
//! the clock and artifact findings, and appends what `decide` returns.

pub mod actuals;
pub mod alert;
mod decide;
pub mod deployment;
pub mod endpoint;
pub mod event;
pub mod job;
pub mod lifecycle;
#[cfg(test)]
mod lifecycle_tests;
pub mod reference;
pub mod routing;
pub mod runtime;
#[cfg(test)]
mod runtime_tests;
pub mod schema;
pub mod state;
#[cfg(test)]
mod tests;
pub mod upcast;

pub use decide::{Command, Decision, bootstrap_admin, can_read_project, decide, may};
pub use event::RegistryEvent;
pub use state::{Recorded, Registry, evolve};

/// The kinds of things a command can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Token,
    Project,
    Member,
    Experiment,
    Tag,
    Model,
    Version,
    Alias,
    Runtime,
    Deployment,
    Endpoint,
    Job,
}

impl Kind {
    pub fn code(self) -> &'static str {
        match self {
            Kind::User => "user_not_found",
            Kind::Token => "token_not_found",
            Kind::Project => "project_not_found",
            Kind::Member => "member_not_found",
            Kind::Experiment => "experiment_not_found",
            Kind::Tag => "tag_not_found",
            Kind::Model => "model_not_found",
            Kind::Version => "version_not_found",
            Kind::Alias => "alias_not_found",
            Kind::Runtime => "runtime_entity_not_found",
            Kind::Deployment => "deployment_not_found",
            Kind::Endpoint => "endpoint_not_found",
            Kind::Job => "job_not_found",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DomainError {
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("{} {id} not found", kind.code().trim_end_matches("_not_found").replace('_', " "))]
    NotFound { kind: Kind, id: String },
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{field}: {detail}")]
    Invalid { field: &'static str, detail: String },
    /// Raising a runtime state beyond the other management source's.
    #[error("{0}")]
    Ceiling(String),
    /// A model version that cannot be deployed here, and why.
    #[error("{0}")]
    NotDeployable(String),
    /// A bootstrap-managed runtime entity changed or deleted through the API.
    #[error("{0}")]
    BootstrapManaged(String),
    #[error("{key}: invalid schema: {detail}")]
    InvalidSchema { key: String, detail: String },
    #[error("metadata {key:?}: {detail}")]
    InvalidMetadata { key: String, detail: String },
}
