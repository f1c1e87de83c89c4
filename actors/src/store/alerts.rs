//! Alert rules, their states and transitions, notification channels and webhook deliveries.
//! Ids are UUIDs, passed to and read from PostgreSQL as text.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde_json::Value;
use tokio_postgres::Row;

use super::StoreError;
use crate::domain::alert::{Rule, RuleSpec, StoredState, Transition, TransitionKind};
use crate::domain::ids::{AgentId, WorkspaceId};

/// A rule row as the API shows it.
#[derive(Debug, Clone)]
pub struct RuleRow {
    pub id: String,
    pub spec: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn rule_row(r: &Row) -> RuleRow {
    RuleRow {
        id: r.get("id"),
        spec: r.get("spec"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

const RULE_COLUMNS: &str = "id::text AS id, spec, created_at, updated_at";

pub async fn list_rules(pool: &Pool, ws: &WorkspaceId) -> Result<Vec<RuleRow>, StoreError> {
    let client = pool.get().await?;
    let sql = format!(
        "SELECT {RULE_COLUMNS} FROM alert_rules WHERE workspace_id = $1 ORDER BY created_at, id"
    );
    let rows = client.query(&sql, &[&ws.as_str()]).await?;
    Ok(rows.iter().map(rule_row).collect())
}

pub async fn get_rule(
    pool: &Pool,
    ws: &WorkspaceId,
    id: &str,
) -> Result<Option<RuleRow>, StoreError> {
    let client = pool.get().await?;
    let sql = format!(
        "SELECT {RULE_COLUMNS} FROM alert_rules WHERE workspace_id = $1 AND id = $2::text::uuid"
    );
    Ok(client
        .query_opt(&sql, &[&ws.as_str(), &id])
        .await?
        .as_ref()
        .map(rule_row))
}

/// Inserts a rule unless the workspace already has `max_rules`; `None` when it has.
pub async fn insert_rule(
    pool: &Pool,
    ws: &WorkspaceId,
    spec: &RuleSpec,
    max_rules: i64,
) -> Result<Option<RuleRow>, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Serialises concurrent creations in one workspace, so the cap holds.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 7))",
        &[&ws.as_str()],
    )
    .await?;
    let n: i64 = tx
        .query_one(
            "SELECT count(*) FROM alert_rules WHERE workspace_id = $1",
            &[&ws.as_str()],
        )
        .await?
        .get(0);
    if n >= max_rules {
        return Ok(None);
    }
    let sql = format!(
        "INSERT INTO alert_rules (workspace_id, spec, enabled) VALUES ($1, $2, $3) RETURNING {RULE_COLUMNS}"
    );
    let spec_json = serde_json::to_value(spec).map_err(|e| StoreError::Data(e.to_string()))?;
    let row = tx
        .query_one(&sql, &[&ws.as_str(), &spec_json, &spec.enabled])
        .await?;
    tx.commit().await?;
    Ok(Some(rule_row(&row)))
}

pub async fn update_rule(
    pool: &Pool,
    ws: &WorkspaceId,
    id: &str,
    spec: &RuleSpec,
) -> Result<Option<RuleRow>, StoreError> {
    let client = pool.get().await?;
    let sql = format!(
        "UPDATE alert_rules SET spec = $3, enabled = $4, updated_at = now()
         WHERE workspace_id = $1 AND id = $2::text::uuid RETURNING {RULE_COLUMNS}"
    );
    let spec_json = serde_json::to_value(spec).map_err(|e| StoreError::Data(e.to_string()))?;
    Ok(client
        .query_opt(&sql, &[&ws.as_str(), &id, &spec_json, &spec.enabled])
        .await?
        .as_ref()
        .map(rule_row))
}

pub async fn delete_rule(pool: &Pool, ws: &WorkspaceId, id: &str) -> Result<bool, StoreError> {
    let client = pool.get().await?;
    let n = client
        .execute(
            "DELETE FROM alert_rules WHERE workspace_id = $1 AND id = $2::text::uuid",
            &[&ws.as_str(), &id],
        )
        .await?;
    Ok(n > 0)
}

/// The ids among `ids` that are live channels of the workspace.
pub async fn existing_channels(
    pool: &Pool,
    ws: &WorkspaceId,
    ids: &[String],
) -> Result<Vec<String>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT id::text FROM notification_channels
             WHERE workspace_id = $1 AND deleted_at IS NULL AND id = ANY($2::text[]::uuid[])",
            &[&ws.as_str(), &ids],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Workspaces whose actor must run from the start: an enabled rule, or a firing alert.
pub async fn alert_workspaces(pool: &Pool) -> Result<Vec<String>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT workspace_id FROM alert_rules WHERE enabled
             UNION SELECT workspace_id FROM alert_states WHERE state = 'firing'",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A workspace's rules (each validated again) and their stored states, for its actor.
pub async fn load_alerts(
    pool: &Pool,
    ws: &WorkspaceId,
) -> Result<(Vec<Rule>, Vec<StoredState>), StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT id::text, spec FROM alert_rules WHERE workspace_id = $1",
            &[&ws.as_str()],
        )
        .await?;
    let mut rules = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.get(0);
        let spec: RuleSpec = serde_json::from_value(row.get(1))
            .map_err(|e| StoreError::Data(format!("rule {id}: {e}")))?;
        match spec.validate(&id) {
            Ok(rule) => rules.push(rule),
            // Only reachable if validation got stricter since it was stored: keep serving the
            // others, say which one is skipped.
            Err(errors) => {
                tracing::error!(workspace = %ws, rule = %id, ?errors, "Stored alert rule no longer validates; skipped.")
            }
        }
    }
    let rows = client
        .query(
            "SELECT rule_id::text, series, state, value, started_at, resolved_at,
                    last_notified_at, cooldown_until
             FROM alert_states WHERE workspace_id = $1",
            &[&ws.as_str()],
        )
        .await?;
    let mut states = Vec::with_capacity(rows.len());
    for row in rows {
        let series: String = row.get(1);
        let agent = match series.as_str() {
            "" => None,
            s => Some(AgentId::parse(s).map_err(|e| StoreError::Data(e.to_string()))?),
        };
        let state: String = row.get(2);
        states.push(StoredState {
            rule_id: row.get(0),
            agent,
            firing: state == "firing",
            value: row.get(3),
            started_at: row.get(4),
            resolved_at: row.get(5),
            last_notified_at: row.get(6),
            cooldown_until: row.get(7),
        });
    }
    Ok((rules, states))
}

/// Records transitions in one transaction: each one's state, its event, and one pending
/// delivery per live channel of its rule (the delivery id is the `webhook-id`). Returns how
/// many deliveries were queued.
pub async fn record_transitions(
    pool: &Pool,
    ws: &WorkspaceId,
    transitions: &[Transition],
) -> Result<u64, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let upsert = tx
        .prepare(
            "INSERT INTO alert_states AS s (rule_id, series, workspace_id, state, value, started_at,
                                            resolved_at, last_notified_at, cooldown_until)
             SELECT r.id, $2, r.workspace_id, $3, $4, $5, $6, $7, $8
             FROM alert_rules r WHERE r.id = $1::text::uuid
             ON CONFLICT (rule_id, series) DO UPDATE SET
                 state = excluded.state, value = excluded.value, started_at = excluded.started_at,
                 resolved_at = excluded.resolved_at, last_notified_at = excluded.last_notified_at,
                 cooldown_until = excluded.cooldown_until",
        )
        .await?;
    let event = tx
        .prepare(
            "INSERT INTO alert_events (workspace_id, rule_id, agent_id, transition, at, alert)
             VALUES ($1, $2::text::uuid, $3, $4, $5, $6)",
        )
        .await?;
    let deliveries = tx
        .prepare(
            "WITH d AS (SELECT gen_random_uuid() AS id, c.id AS channel_id
                        FROM notification_channels c
                        WHERE c.workspace_id = $1 AND c.deleted_at IS NULL
                          AND c.id = ANY($2::text[]::uuid[]))
             INSERT INTO webhook_deliveries (id, workspace_id, channel_id, event_type, payload)
             SELECT d.id, $1, d.channel_id, $3,
                    jsonb_set($4::jsonb, '{id}', to_jsonb(d.id::text))
             FROM d",
        )
        .await?;
    let mut queued = 0;
    for t in transitions {
        let series = t.agent.as_ref().map_or("", AgentId::as_str);
        let s = &t.state;
        let state = if t.kind == TransitionKind::Resolved {
            "resolved"
        } else {
            "firing"
        };
        let started = s.started_at.unwrap_or(t.at);
        let notified = s.last_notified_at.unwrap_or(t.at);
        // A rule deleted meanwhile has no row to hang the state on: the upsert inserts
        // nothing, and the transition is still recorded and delivered.
        tx.execute(
            &upsert,
            &[
                &&*t.rule.id,
                &series,
                &state,
                &s.value,
                &started,
                &s.resolved_at,
                &notified,
                &s.cooldown_until,
            ],
        )
        .await?;
        let alert = t.alert_json();
        tx.execute(
            &event,
            &[
                &ws.as_str(),
                &&*t.rule.id,
                &t.agent.as_ref().map(AgentId::as_str),
                &t.kind.as_str(),
                &t.at,
                &alert,
            ],
        )
        .await?;
        if !t.rule.channel_ids.is_empty() {
            let body = t.body("", ws);
            queued += tx
                .execute(
                    &deliveries,
                    &[
                        &ws.as_str(),
                        &t.rule.channel_ids,
                        &t.kind.event_type(),
                        &body,
                    ],
                )
                .await?;
        }
    }
    tx.commit().await?;
    Ok(queued)
}

/// One transition as `/alerts/events` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AlertEventRow {
    pub id: i64,
    pub rule_id: String,
    pub agent_id: Option<String>,
    pub transition: String,
    pub at: String,
    pub alert: Value,
}

/// Transitions newest first, `limit` of them with ids below `before` (a cursor).
pub async fn list_events(
    pool: &Pool,
    ws: &WorkspaceId,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AlertEventRow>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT id, rule_id::text, agent_id, transition, at, alert FROM alert_events
             WHERE workspace_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            &[&ws.as_str(), &before.unwrap_or(i64::MAX), &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| AlertEventRow {
            id: r.get(0),
            rule_id: r.get(1),
            agent_id: r.get(2),
            transition: r.get(3),
            at: crate::domain::live::ts_json(r.get(4)),
            alert: r.get(5),
        })
        .collect())
}
