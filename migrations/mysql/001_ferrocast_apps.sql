-- ferrocast apps in MySQL 5.7+ or MariaDB 10.2+ (app_store.driver = "mysql"). One row per app; one
-- column per app setting, named as in the configuration file's `apps` entries (`app_key` holds
-- `key`, a reserved word here). A NULL setting takes ferrocast's default. Lists and objects are
-- JSON columns. Columns ferrocast does not know (created_at, your own) are ignored.
CREATE TABLE IF NOT EXISTS ferrocast_apps (
    id                               VARCHAR(64)  NOT NULL PRIMARY KEY,
    app_key                          VARCHAR(64)  NOT NULL UNIQUE,
    secret                           VARCHAR(255) NOT NULL,
    name                             VARCHAR(255),
    enabled                          BOOLEAN      NOT NULL DEFAULT TRUE,
    max_connections                  INT UNSIGNED,
    enable_client_messages           BOOLEAN,
    max_backend_events_per_second    INT UNSIGNED,
    max_client_events_per_second     INT UNSIGNED,
    max_read_requests_per_second     INT UNSIGNED,
    max_presence_members_per_channel INT UNSIGNED,
    max_presence_member_size_kb      INT UNSIGNED,
    max_channel_name_length          INT UNSIGNED,
    max_event_channels_at_once       INT UNSIGNED,
    max_event_name_length            INT UNSIGNED,
    max_event_payload_kb             INT UNSIGNED,
    max_event_batch_size             INT UNSIGNED,
    activity_timeout                 INT UNSIGNED,
    allowed_origins                  JSON,   -- ["https://example.com", ...]
    require_channel_authorization    BOOLEAN,
    require_user_authentication      BOOLEAN,
    user_authentication_timeout_secs INT UNSIGNED,
    webhooks                         JSON,   -- [{"url": "...", "event_types": [...]}, ...]
    webhooks_enabled                 BOOLEAN,
    hooks                            JSON,   -- [{"handler": "http", "url": "...", "events": [...]}, ...]
    webhook_batching                 BOOLEAN,
    subscription_count_events        BOOLEAN,
    subscription_count_interval_ms   INT UNSIGNED,
    watchlist_events                 BOOLEAN,
    max_watchlist_users              INT UNSIGNED,
    history                          JSON,   -- [{"prefix": "orders.", "size": 100, "ttl_secs": 300}]
    created_at                       TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at                       TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP
) DEFAULT CHARSET = utf8mb4;
