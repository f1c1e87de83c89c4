//! Alert rules and their evaluation: [`rule`] parses and validates what the API accepts,
//! [`engine`] runs the per-series state machine against the live windows.

pub mod engine;
pub mod rule;

pub use engine::{
    AlertEngine, Phase, Sample, Scope, SeriesState, StoredState, Transition, TransitionKind,
};
pub use rule::{AlertSeverity, GroupBy, Metric, NoData, Op, Rule, RuleSpec, Source};

#[cfg(test)]
mod tests;
