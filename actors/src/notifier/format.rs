//! Notification bodies per channel format. Every delivery stores the `shadower` body (SPEC
//! §7); the other formats are rendered from it at each attempt, deterministically, so every
//! attempt of a delivery carries the same content.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Shadower,
    Alertmanager,
    Slack,
}

impl Format {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "shadower" => Self::Shadower,
            "alertmanager" => Self::Alertmanager,
            "slack" => Self::Slack,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shadower => "shadower",
            Self::Alertmanager => "alertmanager",
            Self::Slack => "slack",
        }
    }
}

/// Alertmanager's "not resolved yet" end time.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The body sent to a channel of `format`, from the stored `shadower` body.
pub fn render(format: Format, body: &Value) -> Vec<u8> {
    let value = match format {
        Format::Shadower => body.clone(),
        Format::Alertmanager => alertmanager(body),
        Format::Slack => slack(body),
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

/// The Alertmanager webhook payload, version 4, with one alert.
fn alertmanager(body: &Value) -> Value {
    let alert = &body["alert"];
    let resolved = body["type"] == "alert.resolved";
    let status = if resolved { "resolved" } else { "firing" };
    let name = match body["type"].as_str() {
        Some("test") => "Shadower Hub test notification".to_string(),
        _ => text(&alert["name"]),
    };
    let mut labels = serde_json::Map::new();
    labels.insert("alertname".into(), json!(name));
    for key in ["severity", "metric", "rule_id", "agent_id"] {
        let v = text(&alert[key]);
        if !v.is_empty() {
            labels.insert(key.into(), json!(v));
        }
    }
    labels.insert("workspace_id".into(), json!(text(&body["workspace_id"])));
    let fingerprint = {
        let mut h = Sha256::new();
        for (k, v) in &labels {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(text(v).as_bytes());
            h.update([0]);
        }
        h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let summary = summary(body);
    let starts = alert["started_at"].as_str().unwrap_or(ZERO_TIME);
    let ends = if resolved {
        alert["resolved_at"].as_str().unwrap_or(ZERO_TIME)
    } else {
        ZERO_TIME
    };
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{name}\"}}"),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "shadower-hub",
        "groupLabels": {"alertname": name},
        "commonLabels": labels,
        "commonAnnotations": {"summary": summary},
        "externalURL": "",
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": {"summary": summary, "value": text(&alert["value"])},
            "startsAt": starts,
            "endsAt": ends,
            "generatorURL": "",
            "fingerprint": fingerprint,
        }],
    })
}

fn summary(body: &Value) -> String {
    let a = &body["alert"];
    match body["type"].as_str() {
        Some("test") => format!(
            "Test notification from Shadower Hub for workspace {}",
            text(&body["workspace_id"])
        ),
        kind => {
            let state = if kind == Some("alert.resolved") {
                "RESOLVED"
            } else {
                "FIRING"
            };
            let agent = match text(&a["agent_id"]) {
                s if s.is_empty() => String::new(),
                s => format!(", agent {s}"),
            };
            format!(
                "[{state}] {}: {} {} {} {} over {} (workspace {}{agent})",
                text(&a["name"]),
                text(&a["metric"]),
                text(&a["value"]),
                text(&a["op"]),
                text(&a["threshold"]),
                text(&a["window"]),
                text(&body["workspace_id"]),
            )
        }
    }
}

/// A Slack incoming-webhook message.
fn slack(body: &Value) -> Value {
    let icon = match (body["type"].as_str(), body["alert"]["severity"].as_str()) {
        (Some("alert.resolved"), _) => ":white_check_mark:",
        (Some("test"), _) => ":wave:",
        (_, Some("critical")) => ":rotating_light:",
        _ => ":warning:",
    };
    json!({"text": format!("{icon} {}", summary(body))})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firing() -> Value {
        json!({"id": "d1", "type": "alert.firing", "workspace_id": "ws",
               "alert": {"rule_id": "r1", "name": "Errors", "severity": "critical",
                         "metric": "error_rate", "agent_id": null, "value": 0.5, "op": ">",
                         "threshold": 0.2, "window": "5m", "started_at": "2026-11-25T12:00:00.000Z",
                         "resolved_at": null}})
    }

    #[test]
    fn shadower_is_the_stored_body() {
        let b = firing();
        assert_eq!(
            serde_json::from_slice::<Value>(&render(Format::Shadower, &b)).unwrap(),
            b
        );
    }

    #[test]
    fn alertmanager_v4_shape() {
        let v: Value = serde_json::from_slice(&render(Format::Alertmanager, &firing())).unwrap();
        assert_eq!(v["version"], "4");
        assert_eq!(v["status"], "firing");
        let a = &v["alerts"][0];
        assert_eq!(a["labels"]["alertname"], "Errors");
        assert_eq!(a["labels"]["severity"], "critical");
        assert_eq!(a["startsAt"], "2026-11-25T12:00:00.000Z");
        assert_eq!(a["endsAt"], ZERO_TIME);
        assert_eq!(a["fingerprint"].as_str().unwrap().len(), 16);
        assert!(a["labels"].get("agent_id").is_none());
        let mut resolved = firing();
        resolved["type"] = json!("alert.resolved");
        resolved["alert"]["resolved_at"] = json!("2026-11-25T12:05:00.000Z");
        let r: Value = serde_json::from_slice(&render(Format::Alertmanager, &resolved)).unwrap();
        assert_eq!(r["status"], "resolved");
        assert_eq!(r["alerts"][0]["endsAt"], "2026-11-25T12:05:00.000Z");
        assert_eq!(
            r["alerts"][0]["fingerprint"], a["fingerprint"],
            "same alert, same fingerprint"
        );
    }

    #[test]
    fn slack_is_a_text_message() {
        let v: Value = serde_json::from_slice(&render(Format::Slack, &firing())).unwrap();
        let t = v["text"].as_str().unwrap();
        assert!(
            t.contains("[FIRING] Errors") && t.contains("error_rate 0.5 > 0.2"),
            "{t}"
        );
    }
}
