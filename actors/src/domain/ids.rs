//! Identifiers parsed once at the edge. Past the handler nobody re-validates them.

use std::fmt;
use std::sync::Arc;

/// Longest workspace, agent or event id accepted.
pub const MAX_ID_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_ID_LEN} characters")]
    TooLong,
    #[error("may only contain letters, digits and . _ : -")]
    BadChar,
    #[error("must not contain control characters")]
    Control,
}

/// Checks the contract charset of workspace and agent ids: 1–128 of `[A-Za-z0-9._:-]`.
fn check_slug(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err(IdError::BadChar);
    }
    Ok(())
}

macro_rules! slug_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, IdError> {
                check_slug(s)?;
                Ok(Self(Arc::from(s)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

slug_id!(
    /// A workspace: the unit of tenancy, ownership and rate limits.
    WorkspaceId
);
slug_id!(
    /// An agent inside a workspace.
    AgentId
);

impl AgentId {
    /// The live bucket that agents past `limits.max_agents_per_workspace` are counted under.
    pub fn other() -> Self {
        Self(Arc::from(OTHER))
    }
}

/// Name of the overflow bucket for agents and models past the cardinality limits.
pub const OTHER: &str = "_other";

/// An event's id: unique per workspace, chosen by the client. Any printable text of
/// 1–128 characters (UUIDs, ULIDs, `run-42:attempt-2`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(String);

impl EventId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s.chars().count() > MAX_ID_LEN {
            return Err(IdError::TooLong);
        }
        if s.chars().any(char::is_control) {
            return Err(IdError::Control);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_ids_follow_the_contract_charset() {
        for ok in ["a", "ws-1", "support.bot:v2_x", &"x".repeat(128)] {
            assert!(WorkspaceId::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(WorkspaceId::parse(""), Err(IdError::Empty));
        assert_eq!(AgentId::parse(&"x".repeat(129)), Err(IdError::TooLong));
        for bad in ["a b", "a/b", "é", "a\n", "a?"] {
            assert_eq!(AgentId::parse(bad), Err(IdError::BadChar), "{bad}");
        }
    }

    #[test]
    fn event_ids_take_printable_text() {
        assert!(EventId::parse("5b3e0f2a-9c1d-4e8b-a1f0-3c2d1e0f9a8b").is_ok());
        assert!(EventId::parse("run 42 / attempt 2").is_ok());
        assert_eq!(EventId::parse(""), Err(IdError::Empty));
        assert_eq!(EventId::parse("a\u{0}"), Err(IdError::Control));
        assert_eq!(EventId::parse(&"é".repeat(129)), Err(IdError::TooLong));
        assert!(EventId::parse(&"é".repeat(128)).is_ok());
    }
}
