-- 0002: alert rules, their persisted state and transitions, notification channels and
-- webhook deliveries.
--
-- A rule is stored as the validated JSON document the API accepted (`spec`), so the API, the
-- loader and the evaluator share one parser. The state of each firing series lives in
-- `alert_states`, written in the same transaction as the transition that produced it and the
-- deliveries it owes, so a restart neither loses a firing alert nor notifies twice.

CREATE TABLE alert_rules (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id text        NOT NULL,
    spec         jsonb       NOT NULL,
    enabled      boolean     NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_rules_workspace ON alert_rules (workspace_id);

-- One row per (rule, series) that has fired or is cooling down. `series` is the agent id for
-- per-agent rules, '' for the workspace.
CREATE TABLE alert_states (
    rule_id          uuid             NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    series           text             NOT NULL,
    workspace_id     text             NOT NULL,
    state            text             NOT NULL CHECK (state IN ('firing', 'resolved')),
    value            double precision,
    started_at       timestamptz      NOT NULL,
    resolved_at      timestamptz,
    last_notified_at timestamptz      NOT NULL,
    cooldown_until   timestamptz,
    PRIMARY KEY (rule_id, series)
);

-- Transitions, newest first by id. Kept when the rule is deleted (history).
CREATE TABLE alert_events (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id text        NOT NULL,
    rule_id      uuid        NOT NULL,
    agent_id     text,
    transition   text        NOT NULL CHECK (transition IN ('firing', 'resolved', 'repeat')),
    at           timestamptz NOT NULL,
    alert        jsonb       NOT NULL
);
CREATE INDEX alert_events_workspace ON alert_events (workspace_id, id DESC);

-- Webhook channels. The secret is sealed (ChaCha20-Poly1305, key `notifications.secret_key`):
-- `secret_sealed` signs everything; `previous_sealed` also signs until `previous_until`
-- after a rotation. Deleting a channel keeps its row (deliveries refer to it).
CREATE TABLE notification_channels (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id    text        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('webhook')),
    url             text        NOT NULL,
    format          text        NOT NULL CHECK (format IN ('shadower', 'alertmanager', 'slack')),
    secret_sealed   bytea       NOT NULL,
    secret_hint     text        NOT NULL,
    previous_sealed bytea,
    previous_until  timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz
);
CREATE INDEX notification_channels_workspace ON notification_channels (workspace_id) WHERE deleted_at IS NULL;

-- One delivery per (notification, channel); its id is the `webhook-id` of every attempt.
-- Stored with the transition, before the first attempt. `lease_until` marks an attempt in
-- flight, so a crashed node's claim lapses and another attempt is made.
CREATE TABLE webhook_deliveries (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id    text        NOT NULL,
    channel_id      uuid        NOT NULL REFERENCES notification_channels (id),
    event_type      text        NOT NULL,
    payload         jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_workspace ON webhook_deliveries (workspace_id, created_at DESC);

CREATE TABLE webhook_attempts (
    delivery_id uuid        NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt     integer     NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    status_code integer,
    error       text,
    duration_ms double precision NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
