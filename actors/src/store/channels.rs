//! Notification channels and webhook deliveries: what the API manages and what the notifier
//! claims, attempts and records.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde_json::Value;
use tokio_postgres::Row;

use super::StoreError;
use crate::domain::ids::WorkspaceId;
use crate::domain::live::ts_json;

/// A channel as the API shows it (never its secret).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChannelRow {
    pub id: String,
    pub workspace_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    pub format: String,
    pub secret_hint: String,
    /// Until when the previous secret also signs, after a rotation.
    pub previous_secret_until: Option<String>,
    pub created_at: String,
}

const CHANNEL_COLUMNS: &str =
    "id::text, workspace_id, kind, url, format, secret_hint, previous_until, created_at";

fn channel_row(r: &Row) -> ChannelRow {
    ChannelRow {
        id: r.get(0),
        workspace_id: r.get(1),
        kind: r.get(2),
        url: r.get(3),
        format: r.get(4),
        secret_hint: r.get(5),
        previous_secret_until: r
            .get::<_, Option<DateTime<Utc>>>(6)
            .filter(|t| *t > Utc::now())
            .map(ts_json),
        created_at: ts_json(r.get(7)),
    }
}

/// A new channel's id, generated here so its sealed secret can be bound to it.
pub async fn new_id(pool: &Pool) -> Result<String, StoreError> {
    let client = pool.get().await?;
    Ok(client
        .query_one("SELECT gen_random_uuid()::text", &[])
        .await?
        .get(0))
}

pub struct NewChannel<'a> {
    pub id: &'a str,
    pub url: &'a str,
    pub format: &'a str,
    pub sealed: &'a [u8],
    pub hint: &'a str,
}

/// Inserts a channel unless the workspace has `max` live ones; `None` when it has.
pub async fn insert_channel(
    pool: &Pool,
    ws: &WorkspaceId,
    c: NewChannel<'_>,
    max: i64,
) -> Result<Option<ChannelRow>, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 8))",
        &[&ws.as_str()],
    )
    .await?;
    let n: i64 = tx
        .query_one(
            "SELECT count(*) FROM notification_channels WHERE workspace_id = $1 AND deleted_at IS NULL",
            &[&ws.as_str()],
        )
        .await?
        .get(0);
    if n >= max {
        return Ok(None);
    }
    let sql = format!(
        "INSERT INTO notification_channels (id, workspace_id, kind, url, format, secret_sealed, secret_hint)
         VALUES ($1::text::uuid, $2, 'webhook', $3, $4, $5, $6) RETURNING {CHANNEL_COLUMNS}"
    );
    let row = tx
        .query_one(
            &sql,
            &[&c.id, &ws.as_str(), &c.url, &c.format, &c.sealed, &c.hint],
        )
        .await?;
    tx.commit().await?;
    Ok(Some(channel_row(&row)))
}

pub async fn list_channels(pool: &Pool, ws: &WorkspaceId) -> Result<Vec<ChannelRow>, StoreError> {
    let client = pool.get().await?;
    let sql = format!(
        "SELECT {CHANNEL_COLUMNS} FROM notification_channels
         WHERE workspace_id = $1 AND deleted_at IS NULL ORDER BY created_at, id"
    );
    Ok(client
        .query(&sql, &[&ws.as_str()])
        .await?
        .iter()
        .map(channel_row)
        .collect())
}

pub async fn get_channel(
    pool: &Pool,
    ws: &WorkspaceId,
    id: &str,
) -> Result<Option<ChannelRow>, StoreError> {
    let client = pool.get().await?;
    let sql = format!(
        "SELECT {CHANNEL_COLUMNS} FROM notification_channels
         WHERE workspace_id = $1 AND id = $2::text::uuid AND deleted_at IS NULL"
    );
    Ok(client
        .query_opt(&sql, &[&ws.as_str(), &id])
        .await?
        .as_ref()
        .map(channel_row))
}

/// Marks a channel deleted (its deliveries keep referring to it); false when there is none.
pub async fn delete_channel(pool: &Pool, ws: &WorkspaceId, id: &str) -> Result<bool, StoreError> {
    let client = pool.get().await?;
    let n = client
        .execute(
            "UPDATE notification_channels SET deleted_at = now()
             WHERE workspace_id = $1 AND id = $2::text::uuid AND deleted_at IS NULL",
            &[&ws.as_str(), &id],
        )
        .await?;
    Ok(n > 0)
}

/// Makes `sealed` the signing secret; the current one keeps signing until `previous_until`.
pub async fn rotate_secret(
    pool: &Pool,
    ws: &WorkspaceId,
    id: &str,
    sealed: &[u8],
    hint: &str,
    previous_until: DateTime<Utc>,
) -> Result<Option<ChannelRow>, StoreError> {
    let client = pool.get().await?;
    let sql = format!(
        "UPDATE notification_channels
         SET previous_sealed = secret_sealed, previous_until = $5, secret_sealed = $3, secret_hint = $4
         WHERE workspace_id = $1 AND id = $2::text::uuid AND deleted_at IS NULL
         RETURNING {CHANNEL_COLUMNS}"
    );
    Ok(client
        .query_opt(&sql, &[&ws.as_str(), &id, &sealed, &hint, &previous_until])
        .await?
        .as_ref()
        .map(channel_row))
}

/// Queues a test notification on one channel; returns the delivery id.
pub async fn enqueue_test(
    pool: &Pool,
    ws: &WorkspaceId,
    channel: &str,
) -> Result<String, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "WITH d AS (SELECT gen_random_uuid() AS id)
             INSERT INTO webhook_deliveries (id, workspace_id, channel_id, event_type, payload)
             SELECT d.id, $1, $2::text::uuid, 'test',
                    jsonb_build_object('id', d.id::text, 'type', 'test', 'workspace_id', $1::text,
                                       'message', 'Test notification from Shadower Hub')
             FROM d RETURNING id::text",
            &[&ws.as_str(), &channel],
        )
        .await?;
    Ok(row.get(0))
}

/// A delivery as `/notifications/deliveries` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeliveryRow {
    pub id: String,
    pub channel_id: String,
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub given_up: bool,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

/// Deliveries newest first, optionally only those of one status.
pub async fn list_deliveries(
    pool: &Pool,
    ws: &WorkspaceId,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<DeliveryRow>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT id::text, channel_id::text, event_type, status, attempts, last_status, last_error,
                    next_attempt_at, created_at, delivered_at
             FROM webhook_deliveries WHERE workspace_id = $1 AND ($2::text IS NULL OR status = $2)
             ORDER BY created_at DESC, id LIMIT $3",
            &[&ws.as_str(), &status, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let status: String = r.get(3);
            DeliveryRow {
                id: r.get(0),
                channel_id: r.get(1),
                event_type: r.get(2),
                given_up: status == "failed",
                next_attempt_at: (status == "pending")
                    .then(|| ts_json(r.get::<_, DateTime<Utc>>(7))),
                status,
                attempts: r.get(4),
                last_status: r.get(5),
                last_error: r.get(6),
                created_at: ts_json(r.get(8)),
                delivered_at: r.get::<_, Option<DateTime<Utc>>>(9).map(ts_json),
            }
        })
        .collect())
}

/// A delivery claimed for one attempt, with what sending it needs.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: String,
    pub workspace_id: String,
    pub channel_id: String,
    pub url: String,
    pub format: String,
    pub secret_sealed: Vec<u8>,
    pub previous_sealed: Option<Vec<u8>>,
    pub previous_until: Option<DateTime<Utc>>,
    pub channel_deleted: bool,
    pub payload: Value,
    /// Attempts made before this one.
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
}

/// Claims up to `limit` due deliveries for `lease` (an attempt in flight); a crashed node's
/// claims lapse when their lease does. `SKIP LOCKED` lets several nodes share the queue.
pub async fn claim_due(
    pool: &Pool,
    limit: i64,
    lease: std::time::Duration,
) -> Result<Vec<Due>, StoreError> {
    let client = pool.get().await?;
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let rows = client
        .query(
            "WITH due AS (
                 SELECT id FROM webhook_deliveries
                 WHERE status = 'pending' AND next_attempt_at <= now()
                   AND (lease_until IS NULL OR lease_until < now())
                 ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
             UPDATE webhook_deliveries d SET lease_until = now() + $2 * interval '1 millisecond'
             FROM due, notification_channels c
             WHERE d.id = due.id AND c.id = d.channel_id
             RETURNING d.id::text, d.workspace_id, c.id::text, c.url, c.format, c.secret_sealed,
                       c.previous_sealed, c.previous_until, c.deleted_at IS NOT NULL,
                       d.payload, d.attempts, d.created_at",
            &[&limit, &(lease_ms as f64)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Due {
            id: r.get(0),
            workspace_id: r.get(1),
            channel_id: r.get(2),
            url: r.get(3),
            format: r.get(4),
            secret_sealed: r.get(5),
            previous_sealed: r.get(6),
            previous_until: r.get(7),
            channel_deleted: r.get(8),
            payload: r.get(9),
            attempts: r.get(10),
            created_at: r.get(11),
        })
        .collect())
}

/// How an attempt ended.
pub enum AttemptResult {
    Delivered {
        status: u16,
    },
    /// Retried at `retry_at`, or given up when `None`.
    Failed {
        status: Option<u16>,
        error: String,
        retry_at: Option<DateTime<Utc>>,
    },
}

/// Records attempt number `attempt` (1-based) of a delivery and releases its lease.
pub async fn record_attempt(
    pool: &Pool,
    id: &str,
    attempt: i32,
    duration_ms: f64,
    result: &AttemptResult,
) -> Result<(), StoreError> {
    let client = pool.get().await?;
    let (status, status_code, error, next): (
        &str,
        Option<i32>,
        Option<&str>,
        Option<DateTime<Utc>>,
    ) = match result {
        AttemptResult::Delivered { status } => ("delivered", Some(i32::from(*status)), None, None),
        AttemptResult::Failed {
            status,
            error,
            retry_at,
        } => (
            if retry_at.is_some() {
                "pending"
            } else {
                "failed"
            },
            status.map(i32::from),
            Some(error.as_str()),
            *retry_at,
        ),
    };
    client
        .execute(
            "WITH a AS (INSERT INTO webhook_attempts (delivery_id, attempt, status_code, error, duration_ms)
                        VALUES ($1::text::uuid, $2, $4, $5, $7)
                        ON CONFLICT DO NOTHING)
             UPDATE webhook_deliveries SET
                 status = $3, attempts = $2, last_status = $4, last_error = $5,
                 next_attempt_at = coalesce($6, next_attempt_at), lease_until = NULL,
                 delivered_at = CASE WHEN $3 = 'delivered' THEN now() END
             WHERE id = $1::text::uuid",
            &[&id, &attempt, &status, &status_code, &error, &next, &duration_ms],
        )
        .await?;
    Ok(())
}
