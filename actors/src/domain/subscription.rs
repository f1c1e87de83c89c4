//! What a WebSocket session asked to receive: channels, agents and windows. Sessions with
//! the same subscription share one serialized frame per broadcast.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::ids::AgentId;
use super::window::Window;

/// The channels a session may narrow its stream to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Execution,
    Resources,
    Alerts,
    Anomalies,
}

impl Channel {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "execution" => Self::Execution,
            "resources" => Self::Resources,
            "alerts" => Self::Alerts,
            "anomalies" => Self::Anomalies,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subscription {
    pub channels: BTreeSet<Channel>,
    /// `None`: every agent.
    pub agents: Option<BTreeSet<AgentId>>,
    pub windows: BTreeSet<Window>,
}

impl Default for Subscription {
    /// Every channel, every agent, windows 1m, 5m and 1h.
    fn default() -> Self {
        Self {
            channels: [
                Channel::Execution,
                Channel::Resources,
                Channel::Alerts,
                Channel::Anomalies,
            ]
            .into(),
            agents: None,
            windows: [Window::M1, Window::M5, Window::H1].into(),
        }
    }
}

/// Longest `agent_ids` list a subscription may carry.
pub const MAX_SUBSCRIBED_AGENTS: usize = 1_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(rename = "type")]
    _type: String,
    channels: Option<Vec<String>>,
    agent_ids: Option<Vec<String>>,
    windows: Option<Vec<String>>,
}

impl Subscription {
    /// Parses a client's `{"type":"subscribe",…}`; absent fields keep their defaults.
    pub fn parse(text: &str) -> Result<Self, String> {
        let wire: Wire =
            serde_json::from_str(text).map_err(|e| format!("bad subscribe message: {e}"))?;
        let mut sub = Self::default();
        if let Some(channels) = wire.channels {
            sub.channels = channels
                .iter()
                .map(|c| Channel::parse(c).ok_or_else(|| format!("unknown channel `{c}`")))
                .collect::<Result<_, _>>()?;
        }
        if let Some(ids) = wire.agent_ids {
            if ids.len() > MAX_SUBSCRIBED_AGENTS {
                return Err(format!("at most {MAX_SUBSCRIBED_AGENTS} agent_ids"));
            }
            let agents = ids
                .iter()
                .map(|a| AgentId::parse(a).map_err(|e| format!("agent_id `{a}` {e}")))
                .collect::<Result<_, _>>()?;
            sub.agents = Some(agents);
        }
        if let Some(windows) = wire.windows {
            sub.windows = windows
                .iter()
                .map(|w| w.parse::<Window>().map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()?;
        }
        Ok(sub)
    }

    /// The one window sent per agent in updates: 5m when subscribed, else the shortest
    /// subscribed. Agents' windows dominate a frame's size (a frame touching 50 agents is
    /// ~35 KB with one window each, ~100 KB with three), so the workspace gets every
    /// subscribed window and each agent one.
    pub fn agent_window(&self) -> Window {
        if self.windows.contains(&Window::M5) {
            Window::M5
        } else {
            self.windows.first().copied().unwrap_or(Window::M5)
        }
    }

    pub fn wants(&self, channel: Channel) -> bool {
        self.channels.contains(&channel)
    }

    pub fn wants_agent(&self, agent: &AgentId) -> bool {
        self.agents.as_ref().is_none_or(|a| a.contains(agent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_narrowing() {
        let all = Subscription::parse(r#"{"type":"subscribe"}"#).unwrap();
        assert_eq!(all, Subscription::default());
        let s = Subscription::parse(
            r#"{"type":"subscribe","channels":["execution"],"agent_ids":["a"],"windows":["5m"]}"#,
        )
        .unwrap();
        assert!(s.wants(Channel::Execution) && !s.wants(Channel::Resources));
        assert!(s.wants_agent(&AgentId::parse("a").unwrap()));
        assert!(!s.wants_agent(&AgentId::parse("b").unwrap()));
        assert_eq!(s.windows, [Window::M5].into());
    }

    #[test]
    fn bad_subscriptions_say_why() {
        for (text, why) in [
            (
                r#"{"type":"subscribe","channels":["logs"]}"#,
                "unknown channel",
            ),
            (r#"{"type":"subscribe","windows":["2m"]}"#, "unknown window"),
            (r#"{"type":"subscribe","agent_ids":["a b"]}"#, "agent_id"),
            (r#"{"type":"subscribe","extra":1}"#, "bad subscribe message"),
            ("{", "bad subscribe message"),
        ] {
            let err = Subscription::parse(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
