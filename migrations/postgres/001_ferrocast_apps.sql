-- ferrocast apps in PostgreSQL (app_store.driver = "postgres"). One row per app; one column per
-- app setting, named as in the configuration file's `apps` entries (`app_key` holds `key`).
-- A NULL setting takes ferrocast's default. Lists and objects are JSON(B) columns.
-- Columns ferrocast does not know (created_at, your own) are ignored.
CREATE TABLE IF NOT EXISTS ferrocast_apps (
    id                               VARCHAR(64)  PRIMARY KEY,
    app_key                          VARCHAR(64)  NOT NULL UNIQUE,
    secret                           VARCHAR(255) NOT NULL,
    name                             VARCHAR(255),
    enabled                          BOOLEAN      NOT NULL DEFAULT TRUE,
    max_connections                  INTEGER,
    enable_client_messages           BOOLEAN,
    max_backend_events_per_second    INTEGER,
    max_client_events_per_second     INTEGER,
    max_read_requests_per_second     INTEGER,
    max_presence_members_per_channel INTEGER,
    max_presence_member_size_kb      INTEGER,
    max_channel_name_length          INTEGER,
    max_event_channels_at_once       INTEGER,
    max_event_name_length            INTEGER,
    max_event_payload_kb             INTEGER,
    max_event_batch_size             INTEGER,
    activity_timeout                 INTEGER,
    allowed_origins                  JSONB,   -- ["https://example.com", ...]
    require_channel_authorization    BOOLEAN,
    require_user_authentication      BOOLEAN,
    user_authentication_timeout_secs INTEGER,
    webhooks                         JSONB,   -- [{"url": "...", "event_types": [...]}, ...]
    webhooks_enabled                 BOOLEAN,
    hooks                            JSONB,   -- [{"handler": "http", "url": "...", "events": [...]}, ...]
    webhook_batching                 BOOLEAN,
    subscription_count_events        BOOLEAN,
    subscription_count_interval_ms   INTEGER,
    watchlist_events                 BOOLEAN,
    max_watchlist_users              INTEGER,
    history                          JSONB,   -- [{"prefix": "orders.", "size": 100, "ttl_secs": 300}]
    created_at                       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at                       TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every change is announced on the channel `ferrocast_apps` (the app's id as payload), so a
-- running ferrocast can read that app again at once rather than after app_store.cache_ttl_secs.
CREATE OR REPLACE FUNCTION ferrocast_apps_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('ferrocast_apps', COALESCE(NEW.id, OLD.id));
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS ferrocast_apps_changed ON ferrocast_apps;
CREATE TRIGGER ferrocast_apps_changed AFTER INSERT OR UPDATE OR DELETE ON ferrocast_apps
    FOR EACH ROW EXECUTE FUNCTION ferrocast_apps_changed();
