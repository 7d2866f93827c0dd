-- Users, refresh-token families, refresh tokens and failed logins. Applied with search_path set to `auth`.

CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    username text NOT NULL CHECK (char_length(username) BETWEEN 3 AND 32),
    password_hash text NOT NULL,
    roles text[] NOT NULL DEFAULT '{user}' CHECK (roles <@ '{user,admin,service}'::text[]),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- Usernames are unique whatever their case.
CREATE UNIQUE INDEX users_username_lower ON users (lower(username));

-- One family per login; every refresh adds a token to it. Revoking the family ends the whole session.
CREATE TABLE refresh_families (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX refresh_families_user ON refresh_families (user_id);

-- Only the SHA-256 of each token is stored. A used token stays until it expires, so reuse can be detected.
CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    family_id uuid NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);

-- Failed (and in-flight) logins per account (lower-cased username) and per client address.
CREATE TABLE login_failures (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope text NOT NULL CHECK (scope IN ('account', 'address')),
    key text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_lookup ON login_failures (scope, key, created_at DESC);
CREATE INDEX login_failures_created ON login_failures (created_at);
